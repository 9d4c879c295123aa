package lock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
	"github.com/dflock-go/dflock/wire"
)

// replicaSet is what a replicated handle holds, or is taking, for one
// acquisition: a slot per replica of the key, each holding that server's
// grant or nothing. The key is taken when the set holds a quorum and the
// arbiter (see arbiter); it stays held while a quorum lasts.
type replicaSet struct {
	l      *Lock
	addrs  []string
	pools  []*pool.Pool
	quorum int

	// Guarded by l.mu.
	grants  []*pool.Grant // held, nil where not
	entries []*renewal    // the held grants' renewer entries
	taken   []*pool.Grant // the latest grant of each replica, lost ones too
	pending []bool        // a request that may take the replica is out
	held    bool          // a quorum was handed to the caller
	over    bool          // released, lost or given up: late grants go back
	retake  *time.Timer   // the next background attempt at the missing replicas
	backoff time.Duration // before that attempt
	// backoffCap bounds backoff: short while the missing replicas answer
	// busy, long while one does not answer.
	backoffCap time.Duration
	stop       context.CancelFunc
	ctx        context.Context // ends when the set is over: bounds background requests; made by the first re-take
	arb        int             // queued by Enqueue: the arbiter it chose
	yieldTo    int             // waiting on this arbiter: other grants go back; -1 if not
	shown      *pool.Grant     // the grant whose token Token gave last
}

// replicaTimeoutDefault bounds the wait for one replica's answer to a
// try-lock when Config.ReplicaTimeout is zero.
const replicaTimeoutDefault = 500 * time.Millisecond

// Bounds of the pause between background attempts at a missing replica.
// A replica that answered busy is held by a contender that lacks the
// arbiter and lets go within a round trip: it is asked again soon. One
// that did not answer (a server down) backs off to retakeMax.
const (
	retakeFirst   = 10 * time.Millisecond
	retakeMaxBusy = 200 * time.Millisecond
	retakeMax     = time.Second
)

// errSlowServer is why a replica whose server lately failed to answer
// within Config.ReplicaTimeout is left out, while one request at a time
// probes it.
var errSlowServer = errors.New("no answer within the replica timeout lately")

// errQuorumLost is why the replicas still held are given back once a
// quorum is out of reach.
var errQuorumLost = errors.New("the lock lost its quorum")

func (l *Lock) newSet() (*replicaSet, error) {
	addrs, err := shard.Replicas(l.c.strategy, l.key, l.c.replicas)
	if err != nil {
		return nil, err
	}
	s := &replicaSet{l: l, addrs: addrs, quorum: Quorum(len(addrs), max(l.limit, 1))}
	n := len(addrs)
	s.pools = make([]*pool.Pool, n)
	for i, a := range addrs {
		if s.pools[i], err = l.c.poolAt(a); err != nil {
			return nil, err
		}
	}
	s.grants, s.entries, s.taken = make([]*pool.Grant, n), make([]*renewal, n), make([]*pool.Grant, n)
	s.pending = make([]bool, n)
	s.yieldTo, s.backoffCap = -1, retakeMaxBusy
	return s, nil
}

// countLocked is how many replicas the set holds.
func (s *replicaSet) countLocked() int {
	n := 0
	for _, g := range s.grants {
		if g != nil {
			n++
		}
	}
	return n
}

// offer gives the set replica i's grant g. A set that is over, or
// already holds that replica, gives it straight back.
func (s *replicaSet) offer(i int, g *pool.Grant) bool {
	l := s.l
	l.mu.Lock()
	if s.over || s.grants[i] != nil || (s.yieldTo >= 0 && i != s.yieldTo) {
		l.mu.Unlock()
		g.Drop(errUnwanted)
		return false
	}
	e := &renewal{l: l, g: g, idx: -1}
	s.grants[i], s.entries[i], s.taken[i] = g, e, g
	l.mu.Unlock()
	l.c.renewer.add(e)
	g.OnLost(func(err error) { s.replicaLost(i, g, err) })
	return true
}

// replicaLost is the loss callback of replica i's grant g. While the set
// keeps a quorum the replica is taken again in the background; below it,
// a held lock is lost.
func (s *replicaSet) replicaLost(i int, g *pool.Grant, err error) {
	l := s.l
	l.mu.Lock()
	if s.grants[i] != g {
		l.mu.Unlock()
		return
	}
	e := s.entries[i]
	s.grants[i], s.entries[i] = nil, nil
	n := s.countLocked()
	switch {
	case s.over || !s.held:
		// Not handed out (the acquirer counts what is left), or done.
		l.mu.Unlock()
		l.c.renewer.remove(e)
	case n >= s.quorum:
		s.backoff = 0
		s.scheduleLocked()
		l.mu.Unlock()
		l.c.renewer.remove(e)
		// Debug: a server going down costs every lock it held a replica;
		// the pool already logs the connections that broke.
		l.c.log.Debug("lock: lost a replica; still held on a quorum, taking it again", "key", l.key, "server", s.addrs[i], "held", n, "quorum", s.quorum, "err", err)
	default:
		l.c.renewer.remove(e)
		s.loseLocked(fmt.Errorf("%w: %s: %s lost, %d of %d replicas left, quorum %d: %w", ErrLockLost, l.what(), s.addrs[i], n, len(s.addrs), s.quorum, err), s.addrs[i], n+1)
	}
}

// loseLocked reports the held lock lost and gives back what is still
// held, in case a server still counts it. l.mu is held, and released.
func (s *replicaSet) loseLocked(err error, server string, heldBefore int) {
	l := s.l
	rest, entries := s.endLocked()
	taken := append([]*pool.Grant(nil), s.taken...)
	l.set = nil
	l.lose(err, server, lossReport{taken, s.quorum, heldBefore}) // unlocks
	s.drop(rest, entries, errQuorumLost)
}

// endLocked marks the set over and takes its grants and entries out;
// l.mu is held.
func (s *replicaSet) endLocked() ([]*pool.Grant, []*renewal) {
	s.over = true
	if s.stop != nil {
		s.stop()
	}
	if s.retake != nil {
		s.retake.Stop()
	}
	return s.takeOutLocked(-1)
}

// takeOutLocked takes the held grants but replica keep's out of the set,
// with their renewer entries; l.mu is held.
func (s *replicaSet) takeOutLocked(keep int) ([]*pool.Grant, []*renewal) {
	var gs []*pool.Grant
	var es []*renewal
	for i, g := range s.grants {
		if g != nil && i != keep {
			gs, es = append(gs, g), append(es, s.entries[i])
			s.grants[i], s.entries[i] = nil, nil
		}
	}
	return gs, es
}

// drop stops renewing grants taken out of the set and gives them back.
func (s *replicaSet) drop(gs []*pool.Grant, es []*renewal, why error) {
	for _, e := range es {
		s.l.c.renewer.remove(e)
	}
	for _, g := range gs {
		g.Drop(why)
	}
}

// giveUp ends a set that did not become a held lock, and gives back what
// it took.
func (s *replicaSet) giveUp() {
	s.l.mu.Lock()
	gs, es := s.endLocked()
	s.l.mu.Unlock()
	s.drop(gs, es, errUnwanted)
}

// scheduleLocked plans a background attempt at the missing replicas
// that no request is out for; l.mu is held.
func (s *replicaSet) scheduleLocked() {
	if s.over || s.retake != nil {
		return
	}
	missing := false
	for i, g := range s.grants {
		missing = missing || (g == nil && !s.pending[i])
	}
	if !missing {
		return
	}
	if s.ctx == nil {
		// Made on first need: most locks are released with every replica
		// held, and never re-take one.
		s.ctx, s.stop = context.WithCancel(context.Background())
	}
	d := s.backoff
	s.backoff = min(max(2*s.backoff, retakeFirst), s.backoffCap)
	// Jitter keeps the holders of a semaphore's slots out of step.
	s.retake = time.AfterFunc(d/2+rand.N(d/2+1), s.retakeMissing)
}

// retakeMissing tries, once, to take each missing replica: a pipelined
// try-lock, which never jumps a queue. A held lock whose replica came
// back empty (a restarted server) gets it back, so that the next single
// fault leaves it a quorum.
func (s *replicaSet) retakeMissing() {
	l := s.l
	l.mu.Lock()
	s.retake = nil
	var idx []int
	for i, g := range s.grants {
		if g == nil && !s.pending[i] && !s.over {
			idx = append(idx, i)
		}
	}
	ctx := s.ctx
	l.mu.Unlock()
	outs := s.tryAll(ctx, idx, retakeMax, false)
	got, down := false, false
	l.mu.Lock()
	for _, i := range idx {
		got = got || outs[i].took
		down = down || !outs[i].answered
	}
	s.backoffCap = retakeMaxBusy
	if down {
		s.backoffCap = retakeMax
	}
	if got {
		s.backoff = 0
	}
	s.scheduleLocked()
	l.mu.Unlock()
}

// tryOutcome is one replica's answer to a try-lock.
type tryOutcome struct {
	done     bool  // the answer, or the failure to get one, is in
	took     bool  // the set holds it now
	answered bool  // the server answered (granted, busy or an error status)
	err      error // an error status, or why there was no answer
}

// tryAll sends a try-lock to each replica in idx at once, each on its
// server's shared pipelined connections, and offers the grants to the
// set. A replica that has not answered within wait is taken as
// unreachable (a grant that comes later is released). With early, it
// returns as soon as the set holds its arbiter and a quorum; the other
// answers still come in, and their grants join the set.
func (s *replicaSet) tryAll(ctx context.Context, idx []int, wait time.Duration, early bool) []tryOutcome {
	type answer struct {
		i int
		o tryOutcome
	}
	outs := make([]tryOutcome, len(s.addrs))
	slow := s.l.c.slow
	// Requests would only pile up on a server that lately did not
	// answer, or could not be reached; one at a time probes it, and the
	// others count as failed at once.
	type probe struct {
		i    int
		done func()
	}
	var send []probe
	for _, i := range idx {
		if ok, done := slow.send(s.addrs[i]); ok {
			send = append(send, probe{i, done})
		} else {
			outs[i] = tryOutcome{done: true, err: errSlowServer}
		}
	}
	if len(send) == 0 {
		return outs
	}
	ch := make(chan answer, len(send))
	s.l.mu.Lock()
	for _, p := range send {
		s.pending[p.i] = true
	}
	s.l.mu.Unlock()
	// One deadline for the round, ended by the last answer, which may
	// come after an early return.
	rctx, cancel := context.WithTimeout(ctx, wait)
	var left atomic.Int32
	left.Store(int32(len(send)))
	try := func(p probe) {
		o := s.tryOne(rctx, p.i)
		p.done()
		switch {
		case o.answered:
			slow.answered(s.addrs[p.i])
		case ctx.Err() == nil && !errors.Is(o.err, pool.ErrClosed):
			// No answer within wait, or none to be had: the next rounds
			// go on without waiting for this server (see failedLocked).
			slow.saw(s.addrs[p.i])
		}
		ch <- answer{p.i, o}
		if left.Add(-1) == 0 {
			cancel()
		}
	}
	// Each in its own goroutine: a stalled server must not hold up the
	// reading of the others' answers.
	for _, p := range send {
		go try(p)
	}
	for range send {
		a := <-ch
		outs[a.i] = a.o
		if early && s.decided(outs) {
			break
		}
	}
	return outs
}

// quorumWith reports whether the set holds a quorum and its arbiter,
// judging by the answers in so far: every replica before the first held
// one failed.
func (s *replicaSet) quorumWith(outs []tryOutcome) bool {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	i := s.arbiterLocked(outs)
	return i >= 0 && s.grants[i] != nil && s.countLocked() >= s.quorum
}

// decided reports whether the answers in so far settle the round: the
// set holds its arbiter and a quorum, or the arbiter answered busy (the
// acquirer waits there, whatever the others say).
func (s *replicaSet) decided(outs []tryOutcome) bool {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	i := s.arbiterLocked(outs)
	switch {
	case i < 0:
		return false
	case s.grants[i] != nil:
		return s.countLocked() >= s.quorum
	}
	return outs[i].done
}

// arbiterLocked is the first replica, in the key's order, that has not
// failed by the answers in so far (see failedLocked), or -1; l.mu is held.
func (s *replicaSet) arbiterLocked(outs []tryOutcome) int {
	for i := range s.grants {
		if !s.failedLocked(outs, i) {
			return i
		}
	}
	return -1
}

// failedLocked reports whether replica i is out of this round: not held,
// and it did not answer (or answered with a refusal other than busy), or
// it has not answered yet and its server was too slow to answer lately;
// l.mu is held.
func (s *replicaSet) failedLocked(outs []tryOutcome, i int) bool {
	o := outs[i]
	switch {
	case s.grants[i] != nil:
		return false
	case o.done && o.answered && o.err == nil:
		// Busy: a contender would wait there, unless it refuses waits
		// (a server draining for shutdown).
		return s.l.c.slow.refusesWaits(s.addrs[i])
	case o.done:
		return !o.answered || (o.err != nil && !errors.Is(o.err, ErrMaxWaiters))
	}
	return s.l.c.slow.recent(s.addrs[i])
}

// tryOne sends one try-lock to replica i, bounded by ctx.
func (s *replicaSet) tryOne(ctx context.Context, i int) tryOutcome {
	l := s.l
	defer func() {
		l.mu.Lock()
		s.pending[i] = false
		if s.held && s.grants[i] == nil {
			// The lock was handed out while this try was out, and the
			// try did not take the replica: the re-take must.
			s.scheduleLocked()
		}
		l.mu.Unlock()
	}()
	req := l.request(l.cmds.Acquire)
	res, err := s.pools[i].Do(ctx, &req)
	if err != nil {
		return tryOutcome{done: true, err: err}
	}
	g, err := l.grantFrom(ctx, s.addrs[i], res, nil, false)
	if g != nil {
		return tryOutcome{done: true, took: s.offer(i, g), answered: true}
	}
	return tryOutcome{done: true, answered: true, err: err}
}

// arbiter picks the replica on which every contender for the key waits,
// so that two clients each holding a minority never wait on each other:
// the first replica, in the key's replica order, that answered (granted
// the key, or said it was busy). Every client computes the same order, so
// while they see the same servers up they pick the same one. It fails
// when a quorum is out of reach: too many replicas unreachable or
// refusing (a limit mismatch, say). fullQueue says whether a full queue
// on the arbiter is an error (a request that would wait there) or busy.
func (s *replicaSet) arbiter(outs []tryOutcome, fullQueue bool) (int, error) {
	s.l.mu.Lock()
	arb, held, refused, unreachable := s.arbiterLocked(outs), false, 0, 0
	var errs []error
	for i, o := range outs {
		if !s.failedLocked(outs, i) {
			continue
		}
		if o.answered {
			refused++
		} else {
			unreachable++
		}
		errs = append(errs, s.l.describe(cmp.Or(o.err, errSlowServer), s.addrs[i]))
	}
	if arb >= 0 {
		held = s.grants[arb] != nil
	}
	s.l.mu.Unlock()
	n := len(s.addrs)
	switch {
	case arb < 0 || refused+unreachable > n-s.quorum:
		why := fmt.Sprintf("%d unreachable", unreachable)
		if refused > 0 {
			why = fmt.Sprintf("%d refused, %d unreachable", refused, unreachable)
		}
		return -1, fmt.Errorf("%s: only %d of %d replicas available (%s), %d needed:\n%w", s.l.what(), n-refused-unreachable, n, why, s.quorum, errors.Join(errs...))
	case !held && fullQueue && errors.Is(outs[arb].err, ErrMaxWaiters):
		return -1, s.l.describe(outs[arb].err, s.addrs[arb])
	}
	return arb, nil
}

// holds reports whether the set holds replica i.
func (s *replicaSet) holds(i int) bool {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	return s.grants[i] != nil
}

// count is how many replicas the set holds.
func (s *replicaSet) count() int {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	return s.countLocked()
}

// missing lists the replicas the set does not hold.
func (s *replicaSet) missing() []int {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	var idx []int
	for i, g := range s.grants {
		if g == nil {
			idx = append(idx, i)
		}
	}
	return idx
}

// allReplicas lists every replica index.
func (s *replicaSet) allReplicas() []int {
	idx := make([]int, len(s.addrs))
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// yield makes the set give back every replica but arb, now and as
// their grants come in, while it waits on the arbiter: what it holds
// elsewhere would only hold up the arbiter's holder. -1 ends that.
func (s *replicaSet) yield(arb int) {
	var gs []*pool.Grant
	var es []*renewal
	s.l.mu.Lock()
	if s.yieldTo = arb; arb >= 0 {
		gs, es = s.takeOutLocked(arb)
	}
	s.l.mu.Unlock()
	s.drop(gs, es, errUnwanted)
}

// take runs one acquisition: a try-lock to every replica at once (one
// round trip for a free key); with a timeout, a wait on the arbiter when
// another holds it, then waits on the missing replicas until a quorum.
// It holds the set's grants when it returns true, and none otherwise.
func (s *replicaSet) take(ctx context.Context, timeout time.Duration, deadline time.Time) (bool, error) {
	l := s.l
	if timeout > 0 && l.c.contention.recent(l.key) {
		// The key was busy moments ago: ask its first replica alone
		// first. Taking the others too, only to give them back, would
		// cost their servers two requests each and get in the way of the
		// holder taking them.
		switch o := s.tryAll(ctx, []int{0}, l.c.replicaTimeout, false)[0]; {
		case o.took:
			return s.takeRest(ctx, deadline)
		case o.answered && o.err == nil && !l.c.slow.refusesWaits(s.addrs[0]):
			l.c.contention.saw(l.key)
			return s.wait(ctx, 0, deadline)
		case o.answered && errors.Is(o.err, ErrMaxWaiters):
			s.giveUp()
			return false, l.describe(o.err, s.addrs[0])
		}
		// Unreachable, or refusing: the full round finds the arbiter.
	}
	arb, held, _, err := s.round(ctx, timeout > 0)
	if held || err != nil {
		return held, err
	}
	if timeout <= 0 {
		s.giveUp()
		return false, nil
	}
	if !s.holds(arb) {
		l.c.contention.saw(l.key)
		return s.wait(ctx, arb, deadline)
	}
	return s.takeRest(ctx, deadline)
}

// round sends a try-lock to every replica at once and finds the
// arbiter. held says the set holds the arbiter and a quorum: the key is
// taken. On an error the set is given up. fullQueue is as for arbiter.
func (s *replicaSet) round(ctx context.Context, fullQueue bool) (arb int, held bool, outs []tryOutcome, err error) {
	outs = s.tryAll(ctx, s.allReplicas(), s.l.c.replicaTimeout, true)
	if s.quorumWith(outs) {
		return -1, true, outs, nil
	}
	if err := ctx.Err(); err != nil {
		s.giveUp()
		return -1, false, outs, err
	}
	if arb, err = s.arbiter(outs, fullQueue); err != nil {
		s.giveUp()
		return -1, false, outs, err
	}
	// Answers that came in after the early check may have made it.
	return arb, s.quorumWith(outs), outs, nil
}

// wait waits in the arbiter's queue, holding nothing elsewhere, then
// takes the rest. If the arbiter fails meanwhile (its connection breaks,
// it refuses the wait, or it stops answering others), the acquire starts
// again with what is left of the timeout, and the next replica
// arbitrates.
func (s *replicaSet) wait(ctx context.Context, arb int, deadline time.Time) (bool, error) {
	s.yield(arb)
	return s.waitWith(ctx, arb, deadline, func(wctx context.Context) (*pool.Grant, error) {
		return s.l.waitFor(wctx, s.pools[arb], deadline)
	})
}

// waitWith runs wait, a blocking request on the arbiter arb (a lock
// request, or the wait of a two-phase acquire), and goes on as wait
// describes.
func (s *replicaSet) waitWith(ctx context.Context, arb int, deadline time.Time, wait func(context.Context) (*pool.Grant, error)) (bool, error) {
	l, addr := s.l, s.addrs[arb]
	wctx, cancel := context.WithCancelCause(ctx)
	// Nothing tells a waiter that its server stalled: it pings the
	// server now and then (one ping per server at a time, shared by its
	// waiters), and other requests tell too (see slowServers).
	watch := time.NewTicker(l.c.replicaTimeout)
	go func() {
		for {
			select {
			case <-wctx.Done():
				return
			case <-watch.C:
				l.c.slow.check(wctx, addr, s.pools[arb], l.c.replicaTimeout)
				if l.c.slow.recent(addr) {
					cancel(errArbiterFailed)
					return
				}
			}
		}
	}()
	g, err := wait(wctx)
	failed := context.Cause(wctx) == errArbiterFailed
	watch.Stop()
	cancel(nil)
	if g != nil && err == nil {
		s.offer(arb, g)
		s.yield(-1)
		return s.takeRest(ctx, deadline)
	}
	switch {
	case errors.Is(err, ErrServer):
		// dflockd answers "error" to waits while it drains for shutdown,
		// and still grants try-locks.
		l.c.slow.refusedWait(addr)
		failed = true
	case err != nil && ctx.Err() == nil && !errors.As(err, new(*wire.ServerError)):
		// No answer to be had: the connection broke, or was refused.
		l.c.slow.saw(addr)
		failed = true
	}
	if failed && ctx.Err() == nil && time.Now().Before(deadline) {
		s.yield(-1)
		return s.take(ctx, time.Until(deadline), deadline)
	}
	s.giveUp()
	if failed {
		err = nil // the timeout passed
	}
	return false, err
}

// errArbiterFailed ends a wait on an arbiter whose server stopped
// answering.
var errArbiterFailed = errors.New("the arbiter stopped answering")

// takeRest takes the replicas the set lacks, with try-locks to all of
// them at once, again and again until it holds a quorum or deadline
// passes. The set holds the arbiter, so every other contender waits
// there rather than here: whoever holds these lets go within a round
// trip (a contender that found the arbiter taken, or the previous holder
// still releasing). Waiting for them on the server instead would take an
// exclusive connection per replica, and waits on every server for
// connections held by waits on the others can deadlock the pool.
func (s *replicaSet) takeRest(ctx context.Context, deadline time.Time) (bool, error) {
	pause := restFirst
	for {
		outs := s.tryAll(ctx, s.missing(), s.l.c.replicaTimeout, true)
		if s.count() >= s.quorum {
			return true, nil
		}
		if err := ctx.Err(); err != nil {
			s.giveUp()
			return false, err
		}
		if s.l.c.isClosed() {
			s.giveUp()
			return false, ErrClosed
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			s.giveUp()
			if _, err := s.arbiter(outs, false); err != nil {
				return false, err
			}
			return false, nil
		}
		t := time.NewTimer(min(pause/2+rand.N(pause/2+1), wait))
		select {
		case <-ctx.Done():
			t.Stop()
			s.giveUp()
			return false, ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, restMax)
	}
}

// Bounds of the pause between rounds of takeRest.
const (
	restFirst = 500 * time.Microsecond
	restMax   = 50 * time.Millisecond
)

func (l *Lock) acquireReplicated(ctx context.Context, timeout time.Duration, deadline time.Time) (bool, error) {
	if err := l.ready(); err != nil {
		return false, err
	}
	s, err := l.newSet()
	if err != nil {
		return false, err
	}
	ok, err := s.take(ctx, timeout, deadline)
	if !ok || err != nil {
		return false, err
	}
	return l.adoptSet(s)
}

// adoptSet makes the handle the holder of s, a quorum, and starts taking
// the replicas it lacks in the background.
func (l *Lock) adoptSet(s *replicaSet) (bool, error) {
	if !l.c.track(l) {
		s.giveUp()
		return false, ErrClosed
	}
	l.mu.Lock()
	l.state, l.set, s.held = stateHeld, s, true
	if l.lostErr != nil {
		l.lost, l.lostErr = nil, nil // a new acquisition, a new channel
	}
	if n := s.countLocked(); n < s.quorum {
		// A replica was lost since the quorum was counted.
		s.loseLocked(fmt.Errorf("%w: %s: %d of %d replicas left right after the acquire, quorum %d", ErrLockLost, l.what(), n, len(s.addrs), s.quorum), "", n)
		return true, nil
	}
	s.backoff = 0
	s.scheduleLocked()
	l.mu.Unlock()
	return true, nil
}

// releaseSet gives back the replicas a released lock held, all at once.
// It succeeds when a quorum of them was still held; it reports the lock
// lost when the servers had let go of too many to leave one.
func (l *Lock) releaseSet(ctx context.Context, gs []*pool.Grant, replicas, quorum int) error {
	// The releases go on after a quorum answered, bounded by the close
	// timeout: a stalled server must not hold up the caller, nor keep a
	// goroutine for ever.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.closeTimeout)
	type answer struct {
		i   int
		err error
	}
	ch := make(chan answer, len(gs))
	var wg sync.WaitGroup
	for i, g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch <- answer{i, g.Release(rctx)}
		}()
	}
	go func() {
		wg.Wait()
		cancel()
	}()
	errs := make([]error, len(gs))
	answered := make([]bool, len(gs))
	released, gone := 0, 0
	// Past a quorum, the other answers are still awaited a while: a
	// release that returns before they are in would have the next acquire
	// of the key, from this client say, find those replicas still taken.
	// A stalled server is not waited for past the replica timeout, nor
	// at all once known to be slow.
	var linger <-chan time.Time
	for range gs {
		var a answer
		select {
		case a = <-ch:
		case <-linger:
			for i, g := range gs {
				if !answered[i] {
					l.c.slow.saw(g.Addr())
				}
			}
			return nil
		case <-ctx.Done():
			if released >= quorum {
				return nil
			}
			return fmt.Errorf("lock: %s: released on %d of %d replicas, quorum %d, when ctx ended (the rest are still sent): %w", l.what(), released, replicas, quorum, ctx.Err())
		}
		errs[a.i], answered[a.i] = a.err, true
		switch {
		case a.err == nil:
			released++
		case errors.Is(a.err, pool.ErrGrantLost):
			gone++
		}
		if released >= quorum && linger == nil {
			slowLeft := true
			for i, g := range gs {
				slowLeft = slowLeft && (answered[i] || l.c.slow.recent(g.Addr()))
			}
			if slowLeft {
				break
			}
			t := time.NewTimer(l.c.replicaTimeout)
			defer t.Stop()
			linger = t.C
		}
	}
	switch {
	case released >= quorum:
		return nil
	case len(gs)-gone < quorum:
		return fmt.Errorf("%w: %s: the servers held it on only %d of %d replicas, quorum %d: %w", ErrLockLost, l.what(), len(gs)-gone, replicas, quorum, errors.Join(errs...))
	}
	return fmt.Errorf("lock: %s: released on %d of %d replicas, quorum %d; the others did not answer: %w", l.what(), released, replicas, quorum, errors.Join(errs...))
}

// setToken is Token for a replicated handle, while a quorum of replicas
// is still certainly held: the token of the replica it gave before, as
// long as that replica is held, else of the first replica held in the
// key's order.
func (l *Lock) setToken() string {
	l.mu.Lock()
	s := l.set
	if l.state != stateHeld || s == nil {
		l.mu.Unlock()
		return ""
	}
	gs := append([]*pool.Grant(nil), s.grants...)
	shown := s.shown
	l.mu.Unlock()
	now := time.Now()
	n := 0
	var first *pool.Grant
	for _, g := range gs {
		if g == nil {
			continue
		}
		if !now.Before(g.Deadline()) {
			g.Drop(errDeadline)
			continue
		}
		n++
		if first == nil || g == shown {
			first = g
		}
	}
	if n < s.quorum {
		return ""
	}
	if first != shown {
		l.mu.Lock()
		s.shown = first
		l.mu.Unlock()
	}
	return first.Token()
}

// HeldOn lists the servers on which the lock is held now: its server,
// or, with Config.Replicas, every replica it holds, in the key's replica
// order. It is empty when the lock is not held.
func (l *Lock) HeldOn() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != stateHeld {
		return nil
	}
	if l.set == nil {
		return []string{l.grant.Addr()}
	}
	var out []string
	for i, g := range l.set.grants {
		if g != nil {
			out = append(out, l.set.addrs[i])
		}
	}
	return out
}
