package lock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// replicaSet is what a replicated handle holds, or is taking, for one
// acquisition: a slot per server of the key, each holding that server's
// grant or nothing. The servers form one group (the key's replicas), or
// two during a fleet transition (its replicas in the old membership and
// in the new, sharing the servers they have in common). A group is taken
// when the set holds a quorum of it and its arbiter (see arbiter); the
// groups are taken one after the other, in order, and the key stays held
// while every group keeps a quorum.
type replicaSet struct {
	l     *Lock
	rt    *routing // the routing the groups come from
	addrs []string
	pools []*pool.Pool
	// single: a key that moves in a transition, without replicas: each
	// group is one server, which must answer however slow; there is no
	// other to go on without it.
	single bool
	// deadline bounds the acquisition, and with single, the wait for
	// each answer. Set before the first request.
	deadline time.Time

	// Guarded by l.mu.
	groups  []replicaGroup
	cur     int           // the group being taken
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
	endTake    func()          // ends a take of a held set's new group (see Lock.conform) when the set is over
	// taking: a held set takes a new group (see Lock.conform). No
	// background re-take meanwhile: one could take the very replica the
	// take waits for, and the wait would queue behind its own set.
	taking  bool
	arb     int // queued by Enqueue: the arbiter it chose
	yieldTo int // waiting on this arbiter: other grants go back; -1 if not
	// arbTaken, while a wait on the arbiter yieldTo is out, is closed
	// when the set gets that arbiter's grant some other way (an earlier
	// try-lock answered late): the wait would otherwise queue behind the
	// set's own grant.
	arbTaken chan struct{}
	shown    *pool.Grant // the grant whose token Token gave last
	// prefetched, when set, are the answers of a first round sent for
	// many keys together (Client.TryLockMany): the set's first round
	// takes them in place of its own. Only the taking goroutine uses it.
	prefetched []tryOutcome
}

// replicaGroup is one route of a key: its replicas in one membership,
// as indexes into the set's servers in that membership's order, and how
// many of them the lock needs.
type replicaGroup struct {
	idx    []int
	quorum int
	// taken: the set holds the group's quorum for this acquisition. Once
	// the lock is held, a taken group that falls below its quorum loses
	// it.
	taken bool
}

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

// newSet makes the set of an acquisition over routes, each the key's
// servers in one membership (see routing.routes), taken in that order.
func (l *Lock) newSet(rt *routing, routes [][]string) (*replicaSet, error) {
	s := &replicaSet{l: l, rt: rt, groups: make([]replicaGroup, len(routes)), single: l.c.replicas == 1}
	for k, r := range routes {
		g := replicaGroup{idx: make([]int, len(r)), quorum: Quorum(len(r), max(l.limit, 1))}
		for j, a := range r {
			i := slices.Index(s.addrs, a)
			if i < 0 {
				i = len(s.addrs)
				s.addrs = append(s.addrs, a)
			}
			g.idx[j] = i
		}
		s.groups[k] = g
	}
	n := len(s.addrs)
	s.pools = make([]*pool.Pool, n)
	for i, a := range s.addrs {
		var err error
		if s.pools[i], err = l.c.poolAt(a); err != nil {
			return nil, err
		}
	}
	s.grants, s.entries, s.taken = make([]*pool.Grant, n), make([]*renewal, n), make([]*pool.Grant, n)
	s.pending = make([]bool, n)
	s.yieldTo, s.backoffCap = -1, retakeMaxBusy
	return s, nil
}

// countLocked is how many servers the set holds.
func (s *replicaSet) countLocked() int {
	n := 0
	for _, g := range s.grants {
		if g != nil {
			n++
		}
	}
	return n
}

// countIn is how many of group k's replicas the set holds; l.mu is held.
func (s *replicaSet) countIn(k int) int {
	n := 0
	for _, i := range s.groups[k].idx {
		if s.grants[i] != nil {
			n++
		}
	}
	return n
}

// shortLocked returns the first taken group that the set holds less than
// a quorum of, or -1; l.mu is held.
func (s *replicaSet) shortLocked() int {
	for k, g := range s.groups {
		if g.taken && s.countIn(k) < g.quorum {
			return k
		}
	}
	return -1
}

// keptLocked reports whether replica i belongs to a taken group: the set
// keeps it; l.mu is held.
func (s *replicaSet) keptLocked(i int) bool {
	for _, g := range s.groups {
		if g.taken && slices.Contains(g.idx, i) {
			return true
		}
	}
	return false
}

// takenLocked returns the groups the lock counts on: those taken (a held
// set still taking a new group does not count on it yet); l.mu is held.
func (s *replicaSet) takenLocked() []replicaGroup {
	if !slices.ContainsFunc(s.groups, func(g replicaGroup) bool { return !g.taken }) {
		return s.groups // the common case: no copy
	}
	var out []replicaGroup
	for _, g := range s.groups {
		if g.taken {
			out = append(out, g)
		}
	}
	return out
}

// markTaken marks group k taken if the set holds its quorum, and says
// whether it does: after a take of it, which followed the arbiter rule.
func (s *replicaSet) markTaken(k int) bool {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	g := &s.groups[k]
	g.taken = g.taken || s.countIn(k) >= g.quorum
	return g.taken
}

// holdsAlready marks group k taken, without a take of it, if the set
// holds enough of it already (its servers shared with a group taken
// before, or answers to a first round sent to every server), and says
// whether it does. Enough is a quorum, and for any group but the last
// of several its first replica too: a quorum that lacks the arbiter,
// kept while the set waits on a later group, would hold up the arbiter's
// holder, who needs a replica of it, while that holder holds up the set.
// A key's only group (a replicated key that does not move) is not
// taken without its arbiter either: a try-lock would jump the arbiter's
// queue (its first round, sent with many keys, ends in a round that
// judges it, see round).
func (s *replicaSet) holdsAlready(k int) bool {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	g := &s.groups[k]
	lastOfSeveral := k == len(s.groups)-1 && k > 0
	enough := s.countIn(k) >= g.quorum && (lastOfSeveral || s.grants[g.idx[0]] != nil)
	g.taken = g.taken || enough
	return g.taken
}

// offer gives the set replica i's grant g. A set that is over, or
// already holds that replica, gives it straight back.
func (s *replicaSet) offer(i int, g *pool.Grant) bool {
	l := s.l
	l.mu.Lock()
	if s.over || s.grants[i] != nil || (s.yieldTo >= 0 && i != s.yieldTo && !s.keptLocked(i)) {
		l.mu.Unlock()
		g.Drop(errUnwanted)
		return false
	}
	e := &renewal{l: l, g: g, idx: -1}
	s.grants[i], s.entries[i], s.taken[i] = g, e, g
	if i == s.yieldTo && s.arbTaken != nil {
		close(s.arbTaken)
		s.arbTaken = nil
	}
	l.mu.Unlock()
	l.c.renewer.add(e)
	g.OnLost(func(err error) { s.replicaLost(i, g, err) })
	return true
}

// replicaLost is the loss callback of replica i's grant g. While every
// taken group keeps a quorum the replica is taken again in the
// background; below it, a held lock is lost.
func (s *replicaSet) replicaLost(i int, g *pool.Grant, err error) {
	l := s.l
	l.mu.Lock()
	if s.grants[i] != g {
		l.mu.Unlock()
		return
	}
	e := s.entries[i]
	s.grants[i], s.entries[i] = nil, nil
	n, short := s.countLocked(), s.shortLocked()
	switch {
	case s.over || !s.held:
		// Not handed out (the acquirer counts what is left), or done.
		l.mu.Unlock()
		l.c.renewer.remove(e)
	case short < 0:
		s.backoff = 0
		s.scheduleLocked()
		l.mu.Unlock()
		l.c.renewer.remove(e)
		// Debug: a server going down costs every lock it held a replica;
		// the pool already logs the connections that broke.
		l.c.log.Debug("lock: lost a replica; still held on a quorum, taking it again", "key", l.key, "server", s.addrs[i], "held", n, "err", err)
	default:
		l.c.renewer.remove(e)
		g := s.groups[short]
		left := s.countIn(short)
		s.loseLocked(fmt.Errorf("%w: %s: %s lost, %d of %d replicas left, quorum %d: %w", ErrLockLost, l.what(), s.addrs[i], left, len(g.idx), g.quorum, err), s.addrs[i], short, left+1)
	}
}

// loseLocked reports the held lock lost, because group k fell below its
// quorum (heldBefore of it were held just before), and gives back what
// is still held, in case a server still counts it. l.mu is held, and
// released.
func (s *replicaSet) loseLocked(err error, server string, k, heldBefore int) {
	l := s.l
	rest, entries := s.endLocked()
	g := s.groups[k]
	taken := make([]*pool.Grant, len(g.idx))
	for j, i := range g.idx {
		taken[j] = s.taken[i]
	}
	l.set = nil
	l.lose(err, server, lossReport{taken, g.quorum, heldBefore}) // unlocks
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
	if s.endTake != nil {
		s.endTake()
	}
	return s.takeOutLocked(func(int) bool { return true })
}

// takeOutLocked takes the held grants of the replicas out (says which)
// out of the set, with their renewer entries; l.mu is held.
func (s *replicaSet) takeOutLocked(out func(i int) bool) ([]*pool.Grant, []*renewal) {
	var gs []*pool.Grant
	var es []*renewal
	for i, g := range s.grants {
		if g != nil && out(i) {
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
// it took. A held set (taking a new group, see Lock.conform) gives back
// only what it took of groups it has not taken, and lives on.
func (s *replicaSet) giveUp() {
	var gs []*pool.Grant
	var es []*renewal
	s.l.mu.Lock()
	if s.held {
		gs, es = s.takeOutLocked(func(i int) bool { return !s.keptLocked(i) })
		s.yieldTo = -1
	} else {
		gs, es = s.endLocked()
	}
	s.l.mu.Unlock()
	s.drop(gs, es, errUnwanted)
}

// scheduleLocked plans a background attempt at the missing replicas
// that no request is out for; l.mu is held.
func (s *replicaSet) scheduleLocked() {
	if s.over || s.retake != nil || s.taking {
		return
	}
	missing := false
	for i, g := range s.grants {
		missing = missing || (g == nil && !s.pending[i] && s.keptLocked(i))
	}
	if !missing {
		return
	}
	s.retakeCtxLocked()
	d := s.backoff
	s.backoff = min(max(2*s.backoff, retakeFirst), s.backoffCap)
	// Jitter keeps the holders of a semaphore's slots out of step.
	s.retake = time.AfterFunc(d/2+rand.N(d/2+1), s.retakeMissing)
}

// retakeMissing tries, once, to take each missing replica: a pipelined
// try-lock, which never jumps a queue. A held lock whose replica came
// back empty (a restarted server) gets it back, so that the next single
// fault leaves it a quorum.
func (s *replicaSet) retakeMissing() { s.retakeNow(retakeMax) }

// retakeCtxLocked returns the context of the set's re-takes, which its
// end cancels; l.mu is held.
func (s *replicaSet) retakeCtxLocked() context.Context {
	if s.ctx == nil {
		// Made on first need: most locks are released with every replica
		// held, and never re-take one.
		s.ctx, s.stop = context.WithCancel(context.Background())
	}
	return s.ctx
}

// retakeNow is retakeMissing run by the caller, waiting up to wait for
// the answers, then scheduling the next re-take if a replica is still
// missing.
func (s *replicaSet) retakeNow(wait time.Duration) {
	l := s.l
	l.mu.Lock()
	s.retake = nil
	idx := s.toRetakeLocked()
	if len(idx) == 0 {
		l.mu.Unlock()
		return
	}
	ctx := s.retakeCtxLocked()
	l.mu.Unlock()
	outs := s.tryAll(ctx, idx, wait, false)
	l.mu.Lock()
	s.retakenLocked(idx, outs)
	l.mu.Unlock()
}

// doneTaking ends the take of a held set's new groups (see Lock.conform):
// background re-takes may start again, and one does if a replica is
// missing.
func (s *replicaSet) doneTaking() {
	s.l.mu.Lock()
	s.taking = false
	s.scheduleLocked()
	s.l.mu.Unlock()
}

// toRetakeLocked lists the replicas a re-take tries: those of a taken
// group the set holds no grant of and has no try-lock out to; none once
// the set is over. l.mu is held.
func (s *replicaSet) toRetakeLocked() []int {
	var idx []int
	for i, g := range s.grants {
		if g == nil && !s.pending[i] && !s.over && s.keptLocked(i) {
			idx = append(idx, i)
		}
	}
	return idx
}

// retakenLocked takes in the outcomes of a re-take of the replicas idx:
// the backoff to the next one, which it schedules if a replica is still
// missing. l.mu is held.
func (s *replicaSet) retakenLocked(idx []int, outs []tryOutcome) {
	got, down := false, false
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
	send := s.toSend(idx, outs)
	if len(send) == 0 {
		return outs
	}
	ch := make(chan answer, len(send))
	// One deadline for the round, ended by the last answer, which may
	// come after an early return.
	rctx, cancel := context.WithTimeout(ctx, wait)
	var left atomic.Int32
	left.Store(int32(len(send)))
	try := func(p probe) {
		o := s.tryOne(rctx, p.i)
		s.noteAnswer(ctx, p, o)
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

// probe is a try-lock the set may send to replica i; done ends it for the
// slow-server bookkeeping (see slowServers.send).
type probe struct {
	i    int
	done func()
}

// toSend picks the replicas of idx to send a try-lock to, and marks them
// pending: not one whose earlier try-lock is still out (the server would
// call the key taken, by this very set, and its answer comes to the set
// anyway), and not one whose server lately did not answer, unless it is
// the one request at a time that probes it; those are failed in outs at
// once.
func (s *replicaSet) toSend(idx []int, outs []tryOutcome) []probe {
	slow := s.l.c.slow
	s.l.mu.Lock()
	live := make([]int, 0, len(idx))
	for _, i := range idx {
		if !s.pending[i] {
			live = append(live, i)
		}
	}
	s.l.mu.Unlock()
	var send []probe
	for _, i := range live {
		if s.single {
			// Its only server: asked however slow it was lately.
			send = append(send, probe{i, func() {}})
		} else if ok, done := slow.send(s.addrs[i]); ok {
			send = append(send, probe{i, done})
		} else {
			outs[i] = tryOutcome{done: true, err: errSlowServer}
		}
	}
	s.l.mu.Lock()
	for _, p := range send {
		s.pending[p.i] = true
	}
	s.l.mu.Unlock()
	return send
}

// noteAnswer ends probe p, whose try-lock ended with o, and tells the
// slow-server bookkeeping whether its server answered. ctx is the
// acquire's.
func (s *replicaSet) noteAnswer(ctx context.Context, p probe, o tryOutcome) {
	slow := s.l.c.slow
	p.done()
	switch {
	case o.answered:
		slow.answered(s.addrs[p.i])
	case s.single:
		// Nothing to go on without: not marked slow.
	case ctx.Err() == nil && !errors.Is(o.err, pool.ErrClosed):
		// No answer within wait, or none to be had: the next rounds go
		// on without waiting for this server (see failedLocked).
		slow.saw(s.addrs[p.i])
	}
}

// quorumWith reports whether the set holds a quorum of the group it
// takes and its arbiter, judging by the answers in so far: every replica
// before the first held one failed.
func (s *replicaSet) quorumWith(outs []tryOutcome) bool {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	i := s.arbiterLocked(outs)
	return i >= 0 && s.grants[i] != nil && s.countIn(s.cur) >= s.groups[s.cur].quorum
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
		return s.countIn(s.cur) >= s.groups[s.cur].quorum
	}
	return outs[i].done
}

// arbiterLocked is the first replica of the group being taken, in the
// key's order, that has not failed by the answers in so far (see
// failedLocked), or -1; l.mu is held.
func (s *replicaSet) arbiterLocked(outs []tryOutcome) int {
	for _, i := range s.groups[s.cur].idx {
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
	return !s.single && s.l.c.slow.recent(s.addrs[i])
}

// tryOne sends one try-lock to replica i, bounded by ctx.
func (s *replicaSet) tryOne(ctx context.Context, i int) tryOutcome {
	req := s.l.request(s.l.cmds.Acquire)
	res, err := s.pools[i].Do(ctx, &req)
	return s.tried(ctx, i, res, err)
}

// tried takes in the answer (res, or err) to the try-lock of replica i:
// a grant joins the set, if the set still wants it.
func (s *replicaSet) tried(ctx context.Context, i int, res pool.Result, err error) tryOutcome {
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
	g := s.groups[s.cur]
	var errs []error
	for _, i := range g.idx {
		o := outs[i]
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
	n := len(g.idx)
	switch {
	case (arb < 0 || refused+unreachable > n-g.quorum) && n == 1:
		// One server (a key moving in a transition, without replicas):
		// its own error says it all.
		return -1, errs[0]
	case arb < 0 || refused+unreachable > n-g.quorum:
		why := fmt.Sprintf("%d unreachable or silent", unreachable)
		if refused > 0 {
			why = fmt.Sprintf("%d refused, %d unreachable or silent", refused, unreachable)
		}
		return -1, fmt.Errorf("%s: only %d of %d replicas available (%s), %d needed:\n%w", s.l.what(), n-refused-unreachable, n, why, g.quorum, errors.Join(errs...))
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

// hasQuorum reports whether the set holds a quorum of the group it takes.
func (s *replicaSet) hasQuorum() bool {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	return s.countIn(s.cur) >= s.groups[s.cur].quorum
}

// missing lists the replicas of the group being taken that the set does
// not hold.
func (s *replicaSet) missing() []int {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	var idx []int
	for _, i := range s.groups[s.cur].idx {
		if s.grants[i] == nil {
			idx = append(idx, i)
		}
	}
	return idx
}

// answerWait is how long a try-lock of the set waits for its answer
// before the server counts as failed for this round: the replica timeout,
// or, for a single server per group, until the acquisition's deadline
// (and the slack a reply gets).
func (s *replicaSet) answerWait() time.Duration {
	if !s.single {
		return s.l.c.replicaTimeout
	}
	return max(time.Until(s.deadline), 0) + replySlack
}

// allReplicas lists the indexes of n servers.
func allReplicas(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// group lists the replicas of the group being taken, and its first.
func (s *replicaSet) group() []int {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	return slices.Clone(s.groups[s.cur].idx)
}

// yield makes the set give back every replica but arb (and those of
// the groups it has taken), now and as their grants come in, while it
// waits on the arbiter: what it holds elsewhere would only hold up the
// arbiter's holder. -1 ends that.
func (s *replicaSet) yield(arb int) {
	var gs []*pool.Grant
	var es []*renewal
	s.l.mu.Lock()
	if s.yieldTo = arb; arb >= 0 {
		gs, es = s.takeOutLocked(func(i int) bool { return i != arb && !s.keptLocked(i) })
	}
	s.l.mu.Unlock()
	s.drop(gs, es, errUnwanted)
}

// takeGroups takes, in order, the groups the set has not taken: during a
// transition, the key's servers in the old membership, then in the new.
// A group whose quorum the set already holds (servers both memberships
// have) is taken as it stands. It holds the set's grants when it returns
// true, and none of the groups it took otherwise.
func (s *replicaSet) takeGroups(ctx context.Context, timeout time.Duration, deadline time.Time) (bool, error) {
	s.l.mu.Lock()
	n := len(s.groups)
	s.l.mu.Unlock()
	s.deadline = deadline
	for k := 0; k < n; {
		s.l.mu.Lock()
		s.cur = k
		s.l.mu.Unlock()
		if s.holdsAlready(k) {
			k++
			continue
		}
		ok, err := s.take(ctx, timeout, deadline)
		if !ok || err != nil {
			return false, err
		}
		if timeout > 0 {
			// The next group waits until the same deadline.
			timeout = max(time.Until(deadline), time.Nanosecond)
		}
		if s.markTaken(k) {
			k++
		}
		// Not marked taken if a replica was lost since: take it again.
	}
	return true, nil
}

// take runs the taking of one group: a try-lock to each replica at once
// (one round trip for a free key); with a timeout, a wait on the arbiter
// when another holds it, then waits on the missing replicas until a
// quorum. It holds the group's quorum when it returns true; otherwise
// the set was given up (see giveUp).
func (s *replicaSet) take(ctx context.Context, timeout time.Duration, deadline time.Time) (bool, error) {
	l := s.l
	if timeout > 0 && l.c.contention.recent(l.key) {
		// The key was busy moments ago: ask its first replica alone
		// first. Taking the others too, only to give them back, would
		// cost their servers two requests each and get in the way of the
		// holder taking them.
		first := s.group()[0]
		if s.holds(first) {
			// Shared with a group taken before: the set holds the
			// arbiter already.
			return s.takeRest(ctx, deadline)
		}
		switch o := s.tryAll(ctx, []int{first}, s.answerWait(), false)[first]; {
		case o.took:
			return s.takeRest(ctx, deadline)
		case o.answered && o.err == nil && !l.c.slow.refusesWaits(s.addrs[first]):
			l.c.contention.saw(l.key)
			return s.wait(ctx, first, deadline)
		case o.answered && errors.Is(o.err, ErrMaxWaiters):
			s.giveUp()
			return false, l.describe(o.err, s.addrs[first])
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
	// Not those held already, for a group that shares servers with one
	// taken before: the server would call its own holder busy.
	if outs, s.prefetched = s.prefetched, nil; outs == nil {
		outs = s.tryAll(ctx, s.missing(), s.answerWait(), true)
	}
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
	taken := make(chan struct{})
	l.mu.Lock()
	held := s.grants[arb] != nil
	if !held {
		s.arbTaken = taken
	}
	l.mu.Unlock()
	if held {
		// An earlier try-lock took it after all.
		s.yield(-1)
		return s.takeRest(ctx, deadline)
	}
	wctx, cancel := context.WithCancelCause(ctx)
	// Nothing tells a waiter that its server stalled: it pings the
	// server now and then (one ping per server at a time, shared by its
	// waiters), and other requests tell too (see slowServers). Not a
	// single server: there is no other to go on with.
	watch := time.NewTicker(l.c.replicaTimeout)
	tick := watch.C
	if s.single {
		watch.Stop()
		tick = nil
	}
	go func() {
		for {
			select {
			case <-wctx.Done():
				return
			case <-taken:
				cancel(errArbiterTaken)
				return
			case <-tick:
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
	l.mu.Lock()
	if s.arbTaken == taken {
		s.arbTaken = nil
	}
	l.mu.Unlock()
	if g != nil && err == nil {
		s.offer(arb, g) // given back if the set took it meanwhile
	}
	if s.holds(arb) {
		s.yield(-1)
		return s.takeRest(ctx, deadline)
	}
	switch {
	case errors.Is(err, pool.ErrNoFreeConn):
		// Not the arbiter's fault: a member of a set found no connection
		// to wait on (see Set), and gives up.
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

// errArbiterTaken ends a wait on an arbiter that the set took meanwhile.
var errArbiterTaken = errors.New("the arbiter was taken by an earlier try-lock")

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
		outs := s.tryAll(ctx, s.missing(), s.answerWait(), true)
		if s.hasQuorum() {
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

// acquireSet is Acquire with replicas, or on a key that moves in a
// transition: the groups of routes, taken in order.
func (l *Lock) acquireSet(ctx context.Context, rt *routing, routes [][]string, timeout time.Duration, deadline time.Time) (bool, error) {
	s, err := l.newSet(rt, routes)
	if err != nil {
		return false, err
	}
	s.deadline = deadline
	if len(routes) > 1 && (timeout <= 0 || !l.c.contention.recent(l.key)) {
		// A key that moves in a transition: a try-lock to every server of
		// both routes at once, so that a free key costs one round trip,
		// not one per route. Holding the new route's servers before the
		// old route's is safe as long as nothing waits out of order: a
		// busy old route gives the new one back before it waits (yield).
		// Every answer is awaited: a second try-lock sent to a server
		// whose first is still in flight would find the key taken by
		// this very set.
		s.tryAll(ctx, allReplicas(len(s.addrs)), s.answerWait(), false)
	}
	ok, err := s.takeGroups(ctx, timeout, deadline)
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
	l.state, l.set, l.rt, s.held = stateHeld, s, s.rt, true
	l.heldFromLocked(s.addrs[0])
	if l.lostErr != nil {
		l.lost, l.lostErr = nil, nil // a new acquisition, a new channel
	}
	for k := range s.groups {
		s.groups[k].taken = true
	}
	if k := s.shortLocked(); k >= 0 {
		// A replica was lost since the quorum was counted.
		g, n := s.groups[k], s.countIn(k)
		s.loseLocked(fmt.Errorf("%w: %s: %d of %d replicas left right after the acquire, quorum %d", ErrLockLost, l.what(), n, len(g.idx), g.quorum), "", k, n)
		return true, nil
	}
	s.backoff = 0
	s.scheduleLocked()
	l.mu.Unlock()
	return true, nil
}

// quorate returns the first of groups that has (says which of the set's
// servers count) does not give a quorum, or -1 if every group has one.
func quorate(groups []replicaGroup, has func(i int) bool) int {
	for k, g := range groups {
		n := 0
		for _, i := range g.idx {
			if has(i) {
				n++
			}
		}
		if n < g.quorum {
			return k
		}
	}
	return -1
}

// releaseSet gives back gs, the grants a released lock held of set s's
// servers (whose groups were groups), all at once. It succeeds when they
// held a quorum of every group; it reports the lock lost when the servers
// had let go of too many to leave one.
func (l *Lock) releaseSet(ctx context.Context, s *replicaSet, groups []replicaGroup, gs []*pool.Grant) error {
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
	// By server: held, released, gone (the server had let it go).
	held, released, gone := make([]bool, len(s.addrs)), make([]bool, len(s.addrs)), make([]bool, len(s.addrs))
	at := make([]int, len(gs))
	for j, g := range gs {
		at[j] = slices.Index(s.addrs, g.Addr())
		held[at[j]] = true
	}
	isReleased := func(i int) bool { return released[i] }
	errs := make([]error, len(gs))
	answered := make([]bool, len(gs))
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
			k := quorate(groups, isReleased)
			if k < 0 {
				return nil
			}
			return fmt.Errorf("lock: %s: released on %s when ctx ended (the rest are still sent): %w", l.what(), tally(groups[k], released), ctx.Err())
		}
		errs[a.i], answered[a.i] = a.err, true
		switch {
		case a.err == nil:
			released[at[a.i]] = true
		case errors.Is(a.err, pool.ErrGrantLost):
			gone[at[a.i]] = true
		}
		if linger == nil && quorate(groups, isReleased) < 0 {
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
	if quorate(groups, isReleased) < 0 {
		return nil
	}
	if k := quorate(groups, func(i int) bool { return held[i] && !gone[i] }); k >= 0 {
		still := make([]bool, len(held))
		for i := range still {
			still[i] = held[i] && !gone[i]
		}
		return fmt.Errorf("%w: %s: the servers held it on only %s: %w", ErrLockLost, l.what(), tally(groups[k], still), errors.Join(errs...))
	}
	k := quorate(groups, isReleased)
	return fmt.Errorf("lock: %s: released on %s; the others did not answer: %w", l.what(), tally(groups[k], released), errors.Join(errs...))
}

// tally says how many of group g's replicas are in (by server), against
// its quorum.
func tally(g replicaGroup, in []bool) string {
	n := 0
	for _, i := range g.idx {
		if in[i] {
			n++
		}
	}
	return fmt.Sprintf("%d of %d replicas, quorum %d", n, len(g.idx), g.quorum)
}

// setToken is Token for a replicated handle, while a quorum of every
// group is still certainly held: the token of the replica it gave
// before, as long as that replica is held, else of the first replica held
// in the key's order.
func (l *Lock) setToken() string {
	l.mu.Lock()
	s := l.set
	if l.state != stateHeld || s == nil {
		l.mu.Unlock()
		return ""
	}
	gs := slices.Clone(s.grants)
	groups := s.takenLocked()
	shown := s.shown
	l.mu.Unlock()
	now := time.Now()
	var first *pool.Grant
	for i, g := range gs {
		if g == nil {
			continue
		}
		if !now.Before(g.Deadline()) {
			g.Drop(errDeadline)
			gs[i] = nil
			continue
		}
		if first == nil || g == shown {
			first = g
		}
	}
	if quorate(groups, func(i int) bool { return gs[i] != nil }) >= 0 {
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
