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
	p, routes, err := l.place(rt)
	if err != nil {
		return 0, err
	}
	if p == nil {
		return l.enqueueSet(ctx, rt, routes)
	}
	// A free key is granted to a try-lock exactly when it would be to an
	// enqueue (free, and nobody waiting). Tried first on a shared
	// connection, it costs one pipelined round trip, and no exclusive
	// connection is pinned and then kept by the lock: against dflockd
	// that churn of connections cost two-phase most of its throughput.
	// Bounded like Acquire's try-lock, so that a stalled server cannot
	// hold Enqueue for ever.
	try := l.request(l.cmds.Acquire)
	res, err := p.DoBy(ctx, &try, time.Now().Add(l.opt.acquireTimeout+replySlack))
	g, err := l.grantFrom(ctx, p.Addr(), res, err, false)
	switch ok, err := l.hold(rt, g, err); {
	case err != nil:
		return 0, err // a full queue included: an enqueue would be refused too
	case ok:
		return Acquired, nil
	}
	pin, g, err := l.enqueueOn(ctx, p)
	switch {
	case err != nil:
		return 0, err
	case pin != nil:
		if !l.c.track(l) {
			l.withdrawPinned(pin)
			return 0, ErrClosed
		}
		l.mu.Lock()
		l.state, l.pin, l.rt = stateQueued, pin, rt
		l.c.metrics.queuedNow.Add(1)
		l.mu.Unlock()
		return Queued, nil
	}
	if err := l.adopt(rt, g); err != nil {
		return 0, err
	}
	return Acquired, nil
}

// enqueueOn enqueues on p's server, on a pinned connection. Queued, it
// returns that connection, still pinned; acquired at once, the grant.
func (l *Lock) enqueueOn(ctx context.Context, p *pool.Pool) (*pool.Pinned, *pool.Grant, error) {
	pin, err := p.Pin(ctx)
	if err != nil {
		return nil, nil, err
	}
	req := l.request(l.cmds.Enqueue)
	// An enqueue is answered at once (acquired or queued); a server that
	// does not is stalled.
	ectx, cancel := context.WithTimeout(ctx, l.opt.acquireTimeout+replySlack)
	defer cancel()
	res, err := pin.Do(ectx, &req)
	if err == nil {
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

// enqueueSet is Enqueue with replicas, or on a key that moves in a
// transition: try-locks to every replica of the first group at once;
// short of its arbiter and a quorum, the enqueue goes to the arbiter,
// where every contender waits, and Wait takes the rest. A first group
// taken at once, the next are tried the same way, without an enqueue.
func (l *Lock) enqueueSet(ctx context.Context, rt *routing, routes [][]string) (Status, error) {
	s, err := l.newSet(rt, routes)
	if err != nil {
		return 0, err
	}
	s.deadline = time.Now().Add(l.opt.acquireTimeout)
	arb, held, outs, err := s.round(ctx, true)
	switch {
	case err != nil:
		return 0, err
	case held:
		return l.enqueueRest(ctx, s)
	}
	var pin *pool.Pinned
	if !s.holds(arb) {
		s.yield(arb)
		var g *pool.Grant
		if pin, g, err = l.enqueueOn(ctx, s.pools[arb]); err != nil {
			s.giveUp()
			return 0, err
		}
		if g != nil {
			s.offer(arb, g)
			s.yield(-1)
			// The others were given back: try them again.
			s.tryAll(ctx, s.missing(), l.c.replicaTimeout, true)
		}
	}
	if pin == nil && s.quorumWith(outs) {
		return l.enqueueRest(ctx, s)
	}
	return l.queueSet(s, pin, arb)
}

// queueSet leaves s queued (on pin, at the arbiter arb of the group it
// takes), or holding that arbiter short of a quorum, for Wait.
func (l *Lock) queueSet(s *replicaSet, pin *pool.Pinned, arb int) (Status, error) {
	if !l.c.track(l) {
		if pin != nil {
			l.withdrawPinned(pin)
		}
		s.giveUp()
		return 0, ErrClosed
	}
	// Queued on the arbiter, or holding it short of a quorum: the held
	// replicas are renewed meanwhile, and Wait takes the rest.
	l.mu.Lock()
	l.state, l.pin, l.set, s.arb = stateQueued, pin, s, arb
	l.c.metrics.queuedNow.Add(1)
	l.mu.Unlock()
	return Queued, nil
}

// Wait completes a two-phase acquire: it returns true at once, without a
// round trip, if Enqueue already acquired the lock; otherwise it waits up
// to timeout (a ctx deadline that ends sooner wins) and returns false with
// a nil error if the timeout passes, which also gives up the place in the
// queue. Cancelling ctx returns ctx's error at once; the protocol cannot
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
	start := time.Now()
	server := ""
	defer func() {
		if server != "" {
			l.acquireDone(ctx, server, start, ok, err)
		}
	}()
	l.mu.Lock()
	st, pin, set, rt := l.state, l.pin, l.set, l.rt
	if st == stateQueued {
		l.state, l.pin, l.set, l.rt = stateIdle, nil, nil, nil
		l.c.metrics.queuedNow.Add(-1)
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
	if pin != nil {
		server = pin.Addr()
	} else {
		server = set.addrs[0]
	}
	deadline := time.Now().Add(timeout)
	secs := 0
	if timeout > 0 {
		var err error
		if secs, err = waitSeconds(ctx, timeout); err != nil {
			if pin != nil {
				l.withdrawPinned(pin)
			}
			if set != nil {
				set.giveUp()
			}
			return false, err
		}
	}
	if set != nil {
		return l.waitReplicated(ctx, set, pin, secs, timeout, deadline)
	}
	// Always confirmed: dflockd 1.10 answers a wait with the token of a
	// grant it made earlier even when that grant's lease has run out
	// meanwhile and it no longer holds it. Only a renewal tells.
	g, err := l.waitOn(ctx, pin.Addr(), pin, &wire.Request{Cmd: l.cmds.Wait, Key: l.key, Timeout: secs}, true)
	ok, err = l.hold(rt, g, err)
	return l.settle(ctx, rt, deadline, ok, err)
}

// enqueueRest goes on with an Enqueue whose group s.cur was taken at
// once: the next groups are tried, one round of try-locks each. All taken,
// the lock is held; otherwise Wait takes the rest.
func (l *Lock) enqueueRest(ctx context.Context, s *replicaSet) (Status, error) {
	for {
		s.l.mu.Lock()
		k := s.cur
		more := k+1 < len(s.groups)
		s.l.mu.Unlock()
		if !s.markTaken(k) {
			// A replica was lost since: Wait takes the group again.
			return l.queueSet(s, nil, -1)
		}
		if !more {
			break
		}
		s.l.mu.Lock()
		s.cur = k + 1
		s.l.mu.Unlock()
		if s.holdsAlready(k + 1) {
			continue
		}
		arb, held, _, err := s.round(ctx, true)
		switch {
		case err != nil:
			return 0, err
		case !held:
			return l.queueSet(s, nil, arb)
		}
	}
	if _, err := l.adoptSet(s); err != nil {
		return 0, err
	}
	return Acquired, nil
}

// waitReplicated is Wait with replicas: the wait on the arbiter, if
// Enqueue queued there, then the missing replicas, up to the same
// deadline.
func (l *Lock) waitReplicated(ctx context.Context, s *replicaSet, pin *pool.Pinned, secs int, timeout time.Duration, deadline time.Time) (bool, error) {
	var ok bool
	var err error
	s.deadline = deadline
	switch {
	case pin != nil:
		// Queued on the arbiter: wait there, with the same failover as
		// Acquire.
		ok, err = s.waitWith(ctx, s.arb, deadline, func(wctx context.Context) (*pool.Grant, error) {
			return l.waitOn(wctx, s.addrs[s.arb], pin, &wire.Request{Cmd: l.cmds.Wait, Key: l.key, Timeout: secs}, true)
		})
	case s.arb >= 0 && s.holds(s.arb):
		ok, err = s.takeRest(ctx, deadline)
	default:
		// The arbiter's replica was lost while queued: start again.
		ok, err = s.take(ctx, timeout, deadline)
	}
	if ok && err == nil {
		// The groups after it, in a transition.
		ok, err = s.takeGroups(ctx, timeout, deadline)
	}
	if !ok || err != nil {
		return false, err
	}
	ok, err = l.adoptSet(s)
	return l.settle(ctx, s.rt, deadline, ok, err)
}

// withdraw gives up a pending Enqueue.
func (l *Lock) withdraw() {
	l.mu.Lock()
	pin, set := l.pin, l.set
	if l.state == stateQueued {
		l.state, l.pin, l.set, l.rt = stateIdle, nil, nil, nil
		l.c.metrics.queuedNow.Add(-1)
	} else {
		set = nil
	}
	l.mu.Unlock()
	if pin != nil || set != nil {
		l.c.untrack(l)
	}
	if pin != nil {
		l.withdrawPinned(pin)
	}
	if set != nil {
		set.giveUp()
	}
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
