package lock

import (
	"context"
	"fmt"
	"time"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// Status is what Enqueue did.
type Status int

// The outcomes of Enqueue.
const (
	// Acquired: the key was free; the lock is held (and renewed) now.
	Acquired Status = iota + 1
	// Queued: the request waits in the key's queue; call Wait.
	Queued
)

// String returns "acquired" or "queued", as the server says.
func (s Status) String() string {
	switch s {
	case Acquired:
		return "acquired"
	case Queued:
		return "queued"
	}
	return "none" // the zero Status, returned with an error
}

// Enqueue joins the key's queue without waiting, the first half of a
// two-phase acquire: tell another system you are in line, then Wait. If
// the key is free the lock is taken at once (Acquired) and renewed from
// then on; otherwise (Queued) the request keeps its place on a connection
// pinned to this handle until Wait or Close. The pool keeps that
// connection talking meanwhile, so the server never times it out, however
// long the wait for Wait.
func (l *Lock) Enqueue(ctx context.Context) (st Status, err error) {
	l.op.Lock()
	defer l.op.Unlock()
	ctx, end := l.span(ctx, "dflock.Enqueue")
	defer func() { end(st.String(), err) }()
	if err := l.ready(); err != nil {
		return 0, err
	}
	rt := l.c.route.Load()
	st, err = l.enqueue(ctx, rt)
	if st != Acquired || err != nil {
		return st, err
	}
	switch ok, err := l.settle(ctx, rt, time.Now().Add(l.opt.acquireTimeout), true, nil); {
	case err != nil:
		return 0, err
	case !ok:
		return 0, fmt.Errorf("lock: %s was taken as the fleet changed, but its new servers stayed busy for the acquire timeout", l.what())
	}
	return Acquired, nil
}

func (l *Lock) enqueue(ctx context.Context, rt *routing) (Status, error) {
	h, err := l.holderFor(rt)
	if err != nil {
		return 0, err
	}
	// A free key is granted to a try-lock exactly when it would be to an
	// enqueue (free, and nobody waiting). Tried first on a shared
	// connection, it costs one pipelined round trip, and no exclusive
	// connection is pinned and then kept by the lock: against dflockd
	// that churn of connections cost two-phase most of its throughput.
	// Bounded like Acquire's try-lock, so that a stalled server cannot
	// hold Enqueue for ever.
	h.deadline, h.tryOnly = time.Now().Add(l.opt.acquireTimeout), l.opt.acquireTimeout <= 0
	arb, held, outs, err := h.round(ctx, true, nil)
	switch {
	case err != nil:
		return 0, err // a full queue included: an enqueue would be refused too
	case held:
		return l.enqueueRest(ctx, h)
	}
	// Short of the arbiter and a quorum: the enqueue goes to the arbiter,
	// where every contender waits, and Wait takes the rest.
	var pin *pool.Pinned
	if !h.holds(arb) {
		h.yield(arb)
		var g *pool.Grant
		if pin, g, err = l.enqueueOn(ctx, h.slots[arb].pool, time.Now().Add(h.answerWait())); err != nil {
			h.giveUp()
			return 0, err
		}
		if g != nil {
			h.offer(arb, g)
			h.yield(-1)
			// The others were given back: try them again.
			h.tryAll(ctx, h.missing(), l.c.replicaTimeout, true)
		}
	}
	if pin == nil && h.judge(outs, takenVerdict) {
		return l.enqueueRest(ctx, h)
	}
	return l.queue(h, pin, arb)
}

// enqueueOn enqueues on p's server, on a pinned connection. Queued, it
// returns that connection, still pinned; acquired at once, the grant.
func (l *Lock) enqueueOn(ctx context.Context, p *pool.Pool, answerBy time.Time) (*pool.Pinned, *pool.Grant, error) {
	// An enqueue is answered at once (acquired or queued); a server that
	// does not by answerBy is stalled. The wait for a connection counts
	// too.
	ectx, cancel := context.WithDeadline(ctx, answerBy)
	defer cancel()
	pin, err := p.Pin(ectx)
	if err != nil {
		return nil, nil, err
	}
	req := l.request(l.cmds.Enqueue)
	res, err := pin.Do(ectx, &req)
	switch {
	case err != nil && ctx.Err() == nil && ectx.Err() != nil:
		err = fmt.Errorf("%w from %s", pool.ErrNoReply, p.Addr())
	case err == nil:
		err = res.Resp.Err()
	}
	if err != nil {
		pin.Unpin()
		return nil, nil, l.describe(err, p.Addr())
	}
	if res.Resp.Status == wire.StatusQueued {
		return pin, nil, nil
	}
	// Acquired. Consume the registration now (a wait answers at once with
	// the same token: the same grant), so that Wait needs no round trip
	// and the connection is clean for its next user. Should this fail,
	// the connection is closed once the grant ends.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.closeTimeout)
	defer cancel()
	wait := wire.Request{Cmd: l.cmds.Wait, Key: l.key, Timeout: 0}
	if _, err := pin.Do(wctx, &wait); err != nil {
		l.c.log.Debug("lock: consuming an enqueue acquired at once", "key", l.key, "err", err)
	}
	pin.Unpin()
	return nil, res.Grant, nil
}

// queue leaves h queued (on pin, at the arbiter arb of the group it
// takes), or holding that arbiter short of a quorum, for Wait: the held
// replicas are renewed meanwhile, and Wait takes the rest.
func (l *Lock) queue(h *holder, pin *pool.Pinned, arb int) (Status, error) {
	if !l.c.track(l) {
		if pin != nil {
			l.withdrawPinned(pin)
		}
		h.giveUp()
		return 0, ErrClosed
	}
	h.mu.Lock()
	h.arb = arb
	h.mu.Unlock()
	l.mu.Lock()
	l.moveLocked(stateQueued, change{h: h, pin: pin})
	l.mu.Unlock()
	return Queued, nil
}

// Wait completes a two-phase acquire: it returns true at once, without a
// round trip, if Enqueue already acquired the lock; otherwise it waits up
// to timeout (0: the handle's AcquireTimeout; a ctx deadline that ends
// sooner wins) and returns false with a nil error if the timeout passes,
// which also gives up the place in the queue. A negative timeout is
// ErrInvalid. A server that stopped answering is an error matching
// pool.ErrNoReply at the timeout (and at most 50 ms), as with Acquire. Cancelling ctx returns ctx's error at once; the protocol cannot
// cancel a wait, so the server keeps the place until the timeout, and a
// lock it grants meanwhile is released at once.
func (l *Lock) Wait(ctx context.Context, timeout time.Duration) (ok bool, err error) {
	l.op.Lock()
	defer l.op.Unlock()
	ctx, end := l.span(ctx, "dflock.Wait")
	defer func() { end(acquiredOutcome(ctx, ok, err), err) }()
	if l.err != nil {
		return false, l.err
	}
	switch {
	case timeout < 0:
		return false, invalid("Wait with a negative timeout (%v)", timeout)
	case timeout == 0:
		timeout = l.opt.acquireTimeout
	}
	start := time.Now()
	server := ""
	defer func() {
		if server != "" {
			l.acquireDone(ctx, server, start, ok, err)
		}
	}()
	l.mu.Lock()
	st, pin, h := l.state, l.pin, l.h
	if st == stateQueued {
		l.moveLocked(stateIdle, change{})
	}
	l.mu.Unlock()
	switch st {
	case stateHeld:
		return true, nil
	case stateClosed:
		return false, ErrClosed
	case stateQueued:
	default:
		return false, ErrNotEnqueued
	}
	l.c.untrack(l)
	server = h.addr(0)
	deadline := time.Now().Add(timeout)
	secs := 0
	if timeout > 0 {
		var err error
		if secs, err = waitSeconds(ctx, timeout); err != nil {
			if pin != nil {
				l.withdrawPinned(pin)
			}
			h.giveUp()
			return false, err
		}
	}
	return l.waitQueued(ctx, h, pin, secs, timeout, deadline)
}

// enqueueRest goes on with an Enqueue whose current group was taken at
// once: the next groups are tried, one round of try-locks each. All
// taken, the lock is held; otherwise Wait takes the rest.
func (l *Lock) enqueueRest(ctx context.Context, h *holder) (Status, error) {
	for {
		k, more := h.current()
		if !h.markTaken(k) {
			// A replica was lost since: Wait takes the group again.
			return l.queue(h, nil, -1)
		}
		if !more {
			break
		}
		h.setCurrent(k + 1)
		if h.holdsAlready(k + 1) {
			continue
		}
		arb, held, _, err := h.round(ctx, true, nil)
		switch {
		case err != nil:
			return 0, err
		case !held:
			return l.queue(h, nil, arb)
		}
	}
	if _, err := l.adopt(h); err != nil {
		return 0, err
	}
	return Acquired, nil
}

// waitQueued is Wait's taking: the wait on the arbiter, if Enqueue
// queued there, then the missing replicas, up to the same deadline.
// Always confirmed: dflockd 1.10 answers a wait with the token of a
// grant it made earlier even when that grant's lease has run out
// meanwhile and it no longer holds it. Only a renewal tells.
func (l *Lock) waitQueued(ctx context.Context, h *holder, pin *pool.Pinned, secs int, timeout time.Duration, deadline time.Time) (bool, error) {
	var ok bool
	var err error
	h.deadline, h.tryOnly = deadline, timeout <= 0
	switch {
	case pin != nil:
		// Queued on the arbiter: wait there, with the same failover as
		// Acquire.
		ok, err = h.waitWith(ctx, h.arb, deadline, func(wctx context.Context) (*pool.Grant, error) {
			return l.waitOn(wctx, h.slots[h.arb].pool, pin, &wire.Request{Cmd: l.cmds.Wait, Key: l.key, Timeout: secs}, deadline, true)
		})
	case h.arb >= 0 && h.holds(h.arb):
		ok, err = h.takeRest(ctx, deadline)
	default:
		// The arbiter's replica was lost while queued: start again.
		ok, err = h.take(ctx, timeout, deadline, nil)
	}
	if ok && err == nil {
		// The groups after it, in a transition.
		ok, err = h.takeGroups(ctx, timeout, deadline, nil)
	}
	if !ok || err != nil {
		return false, err
	}
	ok, err = l.adopt(h)
	return l.settle(ctx, h.rt, deadline, ok, err)
}

// withdraw gives up a pending Enqueue.
func (l *Lock) withdraw() {
	l.mu.Lock()
	pin, h := l.pin, l.h
	queued := l.state == stateQueued
	if queued {
		l.moveLocked(stateIdle, change{})
	}
	l.mu.Unlock()
	if !queued {
		return
	}
	l.c.untrack(l)
	if pin != nil {
		l.withdrawPinned(pin)
	}
	h.giveUp()
}

// withdrawPinned gives up the registration on pin (a lock it grants
// meanwhile is released at once) and unpins it.
func (l *Lock) withdrawPinned(pin *pool.Pinned) {
	ctx, cancel := context.WithTimeout(context.Background(), l.c.closeTimeout)
	defer cancel()
	if err := pin.Withdraw(ctx, l.key, l.limit > 0); err != nil {
		l.c.log.Debug("lock: withdrawing an enqueue", "key", l.key, "err", err)
	}
	pin.Unpin()
}
