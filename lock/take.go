package lock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// The one acquisition path. Acquire, TryAcquire, Enqueue+Wait, the
// calls on many keys and a fleet change all take a key through a holder:
//
//  1. takeGroups takes the key's groups in order (one, unless the key
//     moves in a fleet transition).
//  2. take sends a try-lock to every replica of the group at once
//     (round); on a key on one server that is one pipelined request,
//     sent and awaited by the caller itself, no goroutine. The answers
//     decide (takeView): a quorum and its arbiter held is the group
//     taken.
//  3. Short of that, with a timeout, the holder gives back what it
//     holds of the group and waits in the arbiter's queue (wait), where
//     every contender waits, on a pinned connection.
//  4. Holding the arbiter, it takes the rest with try-locks (takeRest):
//     whoever holds them lets go within a round trip.
//  5. adopt hands the holder to the Lock: held, renewed.

// takeGroups takes, in order, the groups the holder has not taken:
// during a transition, the key's servers in the old membership, then in
// the new. A group whose quorum the holder already holds (servers both
// memberships have) is taken as it stands. It holds the holder's grants
// when it returns true, and none of the groups it took otherwise.
//
// first, when given, are the answers of a first round sent for many keys
// together (Client.TryLockMany): the first round of the first group not
// held already takes them in place of its own.
func (h *holder) takeGroups(ctx context.Context, timeout time.Duration, deadline time.Time, first []tryOutcome) (bool, error) {
	h.mu.Lock()
	n := len(h.groups)
	h.mu.Unlock()
	h.deadline, h.tryOnly = deadline, timeout <= 0
	for k := 0; k < n; {
		h.setCurrent(k)
		if h.holdsAlready(k) {
			k++
			continue
		}
		ok, err := h.take(ctx, timeout, deadline, first)
		first = nil // answers not used must not judge a later take
		if !ok || err != nil {
			return false, err
		}
		if timeout > 0 {
			// The next group waits until the same deadline.
			timeout = max(time.Until(deadline), time.Nanosecond)
		}
		if h.markTaken(k) {
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
// the holder was given up (see giveUp).
func (h *holder) take(ctx context.Context, timeout time.Duration, deadline time.Time, first []tryOutcome) (bool, error) {
	l := h.l
	if timeout > 0 && len(h.slots) > 1 && first == nil && l.c.contention.recent(l.key) {
		if ok, err, done := h.takeBusy(ctx, deadline); done {
			return ok, err
		}
	}
	arb, held, _, err := h.round(ctx, timeout > 0, first)
	if held || err != nil {
		return held, err
	}
	if timeout <= 0 {
		h.giveUp()
		if l.c.isClosed() {
			// A grant lost at once to the client's Close is not a
			// busy key.
			return false, ErrClosed
		}
		return false, nil
	}
	if !h.holds(arb) {
		l.c.contention.saw(l.key)
		return h.wait(ctx, arb, deadline)
	}
	return h.takeRest(ctx, deadline)
}

// takeBusy is take for a key that was busy moments ago: it asks the
// group's first replica alone first. Taking the others too, only to give
// them back, would cost their servers two requests each and get in the
// way of the holder taking them. done is false when the full round must
// find the arbiter (the first is unreachable, or refuses waits).
func (h *holder) takeBusy(ctx context.Context, deadline time.Time) (ok bool, err error, done bool) {
	l := h.l
	first := h.group()[0]
	if h.holds(first) {
		// Shared with a group taken before: the holder holds the arbiter
		// already.
		ok, err = h.takeRest(ctx, deadline)
		return ok, err, true
	}
	switch o := h.tryAll(ctx, []int{first}, h.answerWait(), false)[first]; {
	case o.took:
		ok, err = h.takeRest(ctx, deadline)
		return ok, err, true
	case o.answered && o.err == nil && !l.c.slow.refusesWaits(h.addr(first)):
		l.c.contention.saw(l.key)
		ok, err = h.wait(ctx, first, deadline)
		return ok, err, true
	case o.answered && errors.Is(o.err, ErrMaxWaiters):
		h.giveUp()
		return false, l.describe(o.err, h.addr(first)), true
	}
	return false, nil, false
}

// round sends a try-lock to every replica at once (or takes outs, the
// answers of one sent already) and finds the arbiter. held says the
// holder holds the arbiter and a quorum: the group is taken. On an
// error the holder is given up. fullQueue is as for arbiter.
func (h *holder) round(ctx context.Context, fullQueue bool, outs []tryOutcome) (arb int, held bool, _ []tryOutcome, err error) {
	// Not those held already, for a group that shares servers with one
	// taken before: the server would call its own holder busy.
	if outs == nil {
		outs = h.tryAll(ctx, h.missing(), h.answerWait(), true)
	}
	if h.judge(outs, takenVerdict) {
		return -1, true, outs, nil
	}
	if err := ctx.Err(); err != nil {
		h.giveUp()
		return -1, false, outs, err
	}
	if arb, err = h.arbiter(outs, fullQueue); err != nil {
		h.giveUp()
		return -1, false, outs, err
	}
	// Answers that came in after the early check may have made it.
	return arb, h.judge(outs, takenVerdict), outs, nil
}

// arbiter picks the replica to wait on (see takeView.arbiter), or fails
// when a quorum is out of reach: too many replicas unreachable or
// refusing (a limit mismatch, say). fullQueue says whether a full queue
// on the arbiter is an error (a request that would wait there) or busy.
func (h *holder) arbiter(outs []tryOutcome, fullQueue bool) (int, error) {
	var buf viewBuf
	h.mu.Lock()
	v := h.viewLocked(outs, &buf)
	arb, reachable := v.arbiter(), v.reachable()
	refused, unreachable, out := v.availability()
	h.mu.Unlock()
	l := h.l
	n, quorum := len(v.group), v.quorum
	var errs []error
	for _, i := range out {
		errs = append(errs, l.describe(cmp.Or(outs[i].err, errSlowServer), h.addr(i)))
	}
	switch {
	case !reachable && n == 1:
		// One server: its own error says it all.
		return -1, errs[0]
	case !reachable:
		why := fmt.Sprintf("%d unreachable or silent", unreachable)
		if refused > 0 {
			why = fmt.Sprintf("%d refused, %d unreachable or silent", refused, unreachable)
		}
		return -1, fmt.Errorf("%s: only %d of %d replicas available (%s), %d needed:\n%w", l.what(), n-refused-unreachable, n, why, quorum, errors.Join(errs...))
	case !v.held[arb] && fullQueue && errors.Is(outs[arb].err, ErrMaxWaiters):
		return -1, l.describe(outs[arb].err, h.addr(arb))
	}
	return arb, nil
}

// wait waits in the arbiter's queue, holding nothing elsewhere, then
// takes the rest. If the arbiter fails meanwhile (its connection breaks,
// it refuses the wait, or it stops answering others), the acquire starts
// again with what is left of the timeout, and the next replica
// arbitrates.
func (h *holder) wait(ctx context.Context, arb int, deadline time.Time) (bool, error) {
	h.yield(arb)
	return h.waitWith(ctx, arb, deadline, func(wctx context.Context) (*pool.Grant, error) {
		return h.l.waitFor(wctx, h.slots[arb].pool, deadline)
	})
}

// waitWith runs wait, a blocking request on the arbiter arb (a lock
// request, or the wait of a two-phase acquire), and goes on as wait
// describes.
func (h *holder) waitWith(ctx context.Context, arb int, deadline time.Time, wait func(context.Context) (*pool.Grant, error)) (bool, error) {
	var taken chan struct{}
	if !h.single {
		// Only a replica's try-lock can answer late, while the wait is
		// out.
		taken = make(chan struct{})
	}
	h.mu.Lock()
	held := h.slots[arb].grant != nil
	if !held && taken != nil {
		h.extraLocked().arbTaken = taken
	}
	h.mu.Unlock()
	if held {
		// An earlier try-lock took it after all.
		h.yield(-1)
		return h.takeRest(ctx, deadline)
	}
	g, err, failed := h.waitWatched(ctx, arb, taken, wait)
	if taken != nil {
		h.mu.Lock()
		if h.x.arbTaken == taken {
			h.x.arbTaken = nil
		}
		h.mu.Unlock()
	}
	if g != nil && err == nil {
		h.offer(arb, g) // given back if the holder took it meanwhile
	}
	if h.holds(arb) {
		h.yield(-1)
		return h.takeRest(ctx, deadline)
	}
	// A grant that came but is not held was lost at once (its
	// connection broke): not the key's answer, so the take starts again
	// while there is time, as when the arbiter fails.
	failed = g != nil || h.arbiterFailed(ctx, arb, err) || failed
	if failed && ctx.Err() == nil && time.Now().Before(deadline) {
		h.yield(-1)
		return h.take(ctx, time.Until(deadline), deadline, nil)
	}
	h.giveUp()
	if failed {
		err = nil // the timeout passed
	}
	return false, err
}

// waitWatched runs wait on the arbiter arb. Nothing tells a waiter that
// its server stalled: with replicas, it pings the server now and then
// (one ping per server at a time, shared by its waiters), and other
// requests tell too (see slowServers); failed says the wait was ended
// for that. It also ends when taken closes. A key with one server per
// group has no other to go on with, and nothing to end the wait early
// for: it waits in the caller's goroutine alone.
func (h *holder) waitWatched(ctx context.Context, arb int, taken chan struct{}, wait func(context.Context) (*pool.Grant, error)) (*pool.Grant, error, bool) {
	if h.single {
		g, err := wait(ctx)
		return g, err, false
	}
	l, addr := h.l, h.addr(arb)
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watch := time.NewTicker(l.c.replicaTimeout)
	defer watch.Stop()
	watched := l.c.tasks.goFn(func() {
		for {
			select {
			case <-wctx.Done():
				return
			case <-taken:
				cancel(errArbiterTaken)
				return
			case <-watch.C:
				l.c.slow.check(wctx, addr, h.slots[arb].pool, l.c.replicaTimeout)
				if l.c.slow.recent(addr) {
					cancel(errArbiterFailed)
					return
				}
			}
		}
	})
	if !watched {
		return nil, ErrClosed, false
	}
	g, err := wait(wctx)
	return g, err, context.Cause(wctx) == errArbiterFailed
}

// arbiterFailed reports whether the wait on arb ended with err because
// the arbiter failed (and notes it), rather than the wait's own end.
func (h *holder) arbiterFailed(ctx context.Context, arb int, err error) bool {
	if len(h.slots) == 1 {
		// No other server to go on with: its error is the answer.
		return false
	}
	slow, addr := h.l.c.slow, h.addr(arb)
	switch {
	case errors.Is(err, pool.ErrNoFreeConn):
		// Not the arbiter's fault: a member of a set found no connection
		// to wait on (see Set), and gives up.
	case errors.Is(err, ErrServer):
		// dflockd answers "error" to waits while it drains for shutdown,
		// and still grants try-locks.
		slow.refusedWait(addr)
		return true
	case err != nil && ctx.Err() == nil && !errors.As(err, new(*wire.ServerError)):
		// No answer to be had: the connection broke, or was refused.
		slow.saw(addr)
		return true
	}
	return false
}

// errArbiterFailed ends a wait on an arbiter whose server stopped
// answering.
var errArbiterFailed = errors.New("the arbiter stopped answering")

// errArbiterTaken ends a wait on an arbiter that the holder took
// meanwhile.
var errArbiterTaken = errors.New("the arbiter was taken by an earlier try-lock")

// takeRest takes the replicas the holder lacks, with try-locks to all of
// them at once, again and again until it holds a quorum or deadline
// passes. The holder holds the arbiter, so every other contender waits
// there rather than here: whoever holds these lets go within a round
// trip (a contender that found the arbiter taken, or the previous holder
// still releasing). Waiting for them on the server instead would take an
// exclusive connection per replica, and waits on every server for
// connections held by waits on the others can deadlock the pool.
func (h *holder) takeRest(ctx context.Context, deadline time.Time) (bool, error) {
	pause := restFirst
	for {
		outs := h.tryAll(ctx, h.missing(), h.answerWait(), true)
		if h.judge(outs, quorumVerdict) {
			return true, nil
		}
		if err := ctx.Err(); err != nil {
			h.giveUp()
			return false, err
		}
		if h.l.c.isClosed() {
			h.giveUp()
			return false, ErrClosed
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			h.giveUp()
			if _, err := h.arbiter(outs, false); err != nil {
				return false, err
			}
			return false, nil
		}
		t := time.NewTimer(ahead(min(pause/2+rand.N(pause/2+1), wait)))
		select {
		case <-ctx.Done():
			t.Stop()
			h.giveUp()
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

// answerWait is how long a try-lock of the holder waits for its answer
// before its server counts as not answering for this round: until the
// acquisition's deadline, and for a replica at most the replica timeout.
// A try-only call (TryAcquire, TryLockMany: no deadline to wait to)
// waits the replica timeout, for every server. A take whose deadline is
// near still hears an answer on its way, for minAnswerWait.
func (h *holder) answerWait() time.Duration {
	rt := h.l.c.replicaTimeout
	if h.tryOnly {
		return rt
	}
	w := max(time.Until(h.deadline), minAnswerWait)
	if !h.single {
		w = min(w, rt)
	}
	return w
}

// minAnswerWait is the least a try-lock waits for its answer: a call is
// bounded by its timeout and this.
const minAnswerWait = 50 * time.Millisecond

// tryAll sends a try-lock to each replica in idx at once, each on its
// server's shared pipelined connections, and offers the grants to the
// holder. A replica that has not answered within wait is taken as
// unreachable (a grant that comes later is released). With early, it
// returns as soon as the round is decided (takeView.decided); the other
// answers still come in, and their grants join the holder. The caller
// sends and awaits the requests itself: no goroutine, unless an early
// return leaves answers to take in.
func (h *holder) tryAll(ctx context.Context, idx []int, wait time.Duration, early bool) []tryOutcome {
	var outs []tryOutcome
	if len(h.slots) == 1 {
		// Only the taker asks a holder of one slot (it has no replica
		// to re-take): its outcomes need no allocation.
		h.oneOuts[0] = tryOutcome{}
		outs = h.oneOuts[:]
	} else {
		outs = make([]tryOutcome, len(h.slots))
	}
	var sendBuf [viewBufLen]probe
	send := h.toSend(idx, outs, sendBuf[:0])
	deadline := time.Now().Add(wait)
	if early && len(send) > 1 {
		h.tryAsTheyCome(ctx, slices.Clone(send), outs, deadline)
		return outs
	}
	// Every answer is awaited, by the same deadline: in turn.
	var callBuf [viewBufLen]pool.Call
	calls := callBuf[:0]
	for _, p := range send {
		calls = append(calls, h.slots[p.i].pool.Send(ctx, h.tryRequest()))
	}
	for j, p := range send {
		outs[p.i] = h.answer(ctx, p, &calls[j], deadline)
	}
	return outs
}

// tryAsTheyCome sends the try-locks of send at once and takes their
// answers into outs as they come, until the round is decided. The
// answers still out then are taken in the background: their grants join
// the holder, or go back.
func (h *holder) tryAsTheyCome(ctx context.Context, send []probe, outs []tryOutcome, deadline time.Time) {
	r := &tryRound{h: h, ctx: ctx, send: send, calls: make([]pool.Call, len(send)), outs: outs, deadline: deadline}
	for j, p := range send {
		r.calls[j] = h.slots[p.i].pool.Send(ctx, h.tryRequest())
	}
	if !r.takeUntilDecided() || r.left == 0 {
		return
	}
	r.outs = make([]tryOutcome, len(outs)) // outs is the caller's now
	if !h.l.c.tasks.goFn(func() { r.take(false) }) {
		r.take(false) // closing: the pools fail them at once
	}
}

// tryRound is a round of try-locks sent at once (send, as calls), whose
// answers come into outs, each by deadline.
type tryRound struct {
	h        *holder
	ctx      context.Context
	send     []probe
	calls    []pool.Call
	outs     []tryOutcome
	deadline time.Time
	in       chan int // tells which calls are in
	taken    []bool   // by call
	left     int      // calls not taken
}

// takeUntilDecided takes the answers as they come until the round is
// decided (takeView.decided) or every answer is in; a stalled server
// does not hold up the others. If ctx ends or the deadline passes first,
// the rest are taken as they stand (see take). decided says answers may
// be left out.
func (r *tryRound) takeUntilDecided() (decided bool) {
	r.in, r.taken, r.left = make(chan int, len(r.calls)), make([]bool, len(r.calls)), len(r.calls)
	for j := range r.calls {
		r.calls[j].Notify(r.in, j)
	}
	return r.take(true)
}

// take takes the answers as they come, until every one is in, or with
// untilDecided, the round is decided (and then says so). Once ctx ends or
// the deadline passes, those still out are each taken at once (an answer
// missing, or for a probe of a slow server, at its deadline).
func (r *tryRound) take(untilDecided bool) (decided bool) {
	late := time.NewTimer(ahead(time.Until(r.deadline)))
	defer late.Stop()
	for r.left > 0 {
		select {
		case j := <-r.in:
			r.takeAnswer(j)
			if untilDecided && r.h.judge(r.outs, decidedVerdict) {
				return true
			}
			continue
		case <-r.ctx.Done():
		case <-late.C:
		}
		for j := range r.calls {
			if !r.taken[j] {
				r.takeAnswer(j)
			}
		}
	}
	return false
}

// takeAnswer takes call j's answer (awaiting it until the deadline).
func (r *tryRound) takeAnswer(j int) {
	p := r.send[j]
	r.outs[p.i] = r.h.answer(r.ctx, p, &r.calls[j], r.deadline)
	r.taken[j] = true
	r.left--
}

// probe is a try-lock the holder may send to replica i; done ends it for
// the slow-server bookkeeping, and slow says it probes a slow server
// (see slowServers.send).
type probe struct {
	i    int
	done func()
	slow bool
}

// toSend picks the replicas of idx to send a try-lock to, and marks them
// pending: not one whose earlier try-lock is still out (the server would
// call the key taken, by this very holder, and its answer comes to the
// holder anyway), and not one whose server lately did not answer, unless
// it is the one request at a time that probes it; those are failed in
// outs at once. It appends them to send. A group that cannot make its
// quorum without its slow servers asks them all the same: every replica
// slow at once says more about this process or its network than about
// the servers, and failing at once would help nobody.
func (h *holder) toSend(idx []int, outs []tryOutcome, send []probe) []probe {
	slow := h.l.c.slow
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, i := range idx {
		if h.slots[i].pending {
			continue
		}
		if h.single || h.needsSlowLocked(i) {
			// Its only server, or one its group needs: asked however
			// slow it was lately.
			send = append(send, probe{i, noProbe, false})
		} else if ok, probing, done := slow.send(h.addr(i)); ok {
			send = append(send, probe{i, done, probing})
		} else {
			outs[i] = tryOutcome{done: true, err: errSlowServer}
			continue
		}
		h.slots[i].pending = true
	}
	return send
}

// needsSlowLocked reports whether slot i's group falls short of its
// quorum without the replicas whose servers are lately slow (or refuse
// waits): those held, or with a try-lock out, count as there.
func (h *holder) needsSlowLocked(i int) bool {
	slow := h.l.c.slow
	for _, g := range h.groups {
		if !slices.Contains(g.idx, i) {
			continue
		}
		there := 0
		for _, j := range g.idx {
			s := &h.slots[j]
			if s.grant != nil || s.pending || (!slow.recent(h.addr(j)) && !slow.refusesWaits(h.addr(j))) {
				there++
			}
		}
		if there < g.quorum {
			return true
		}
	}
	return false
}

// noteAnswer ends probe p, whose try-lock ended with o, and tells the
// slow-server bookkeeping whether its server answered. ctx is the
// acquire's.
func (h *holder) noteAnswer(ctx context.Context, p probe, o tryOutcome) {
	slow := h.l.c.slow
	p.done()
	switch {
	case o.answered:
		if !h.single {
			slow.answered(h.addr(p.i))
		}
	case h.single:
		// Nothing to go on without: not marked slow.
	case ctx.Err() == nil && !errors.Is(o.err, pool.ErrClosed):
		// No answer within wait, or none to be had: the next rounds go
		// on without waiting for this server (see takeView.failed).
		slow.saw(h.addr(p.i))
	}
}

// tryRequest is the holder's try-lock.
func (h *holder) tryRequest() *wire.Request {
	req := h.l.request(h.l.cmds.Acquire)
	return &req
}

// answer takes in the answer to the try-lock of probe p, sent as call,
// waiting for it until deadline (a grant that comes later is released),
// and notes it (see noteAnswer). A slow server's probe is awaited until
// then even when ctx, the acquisition's, ends first (an acquire that
// returned, a holder released): ended early, it would let another
// request go to a server that has not answered this one.
func (h *holder) answer(ctx context.Context, p probe, call *pool.Call, deadline time.Time) tryOutcome {
	actx := ctx
	if p.slow {
		actx = context.WithoutCancel(ctx)
	}
	res, err := call.Await(actx, deadline)
	o := h.tried(actx, p.i, res, err)
	h.noteAnswer(ctx, p, o)
	return o
}

// tried takes in the answer (res, or err) to the try-lock of replica i:
// a grant joins the holder, if the holder still wants it.
func (h *holder) tried(ctx context.Context, i int, res pool.Result, err error) tryOutcome {
	defer h.triedDone(i)
	if err != nil {
		return tryOutcome{done: true, err: err}
	}
	g, err := h.l.grantFrom(ctx, h.addr(i), res, nil, false)
	if g != nil {
		return tryOutcome{done: true, took: h.offer(i, g), answered: true}
	}
	return tryOutcome{done: true, answered: true, err: err}
}

// triedDone ends replica i's try-lock: if the lock was handed out while
// it was out, and it did not take the replica, the re-take must.
func (h *holder) triedDone(i int) {
	h.mu.Lock()
	h.slots[i].pending = false
	if h.held && h.slots[i].grant == nil {
		h.scheduleLocked()
	}
	h.mu.Unlock()
}

// allReplicas lists the indexes of n servers.
func allReplicas(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}
