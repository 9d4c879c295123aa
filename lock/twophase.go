package lock

import (
	"context"
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
	return "status(?)"
}

// Enqueue joins the key's queue without waiting, the first half of a
// two-phase acquire: tell another system you are in line, then Wait. If
// the key is free the lock is taken at once (Acquired) and renewed from
// then on; otherwise (Queued) the request keeps its place on a connection
// pinned to this handle until Wait or Close. The pool keeps that
// connection talking meanwhile, so the server never times it out, however
// long the wait for Wait.
func (l *Lock) Enqueue(ctx context.Context) (Status, error) {
	l.op.Lock()
	defer l.op.Unlock()
	p, err := l.begin()
	if err != nil {
		return 0, err
	}
	// A free key is granted to a try-lock exactly when it would be to an
	// enqueue (free, and nobody waiting). Tried first on a shared
	// connection, it costs one pipelined round trip, and no exclusive
	// connection is pinned and then kept by the lock: against dflockd
	// that churn of connections cost two-phase most of its throughput.
	try := l.request(l.cmds.Acquire)
	res, err := p.Do(ctx, &try)
	switch ok, err := l.take(ctx, res, err, false); {
	case err != nil:
		return 0, err // a full queue included: an enqueue would be refused too
	case ok:
		return Acquired, nil
	}
	pin, err := p.Pin(ctx)
	if err != nil {
		return 0, err
	}
	req := l.request(l.cmds.Enqueue)
	res, err = pin.Do(ctx, &req)
	if err == nil {
		err = res.Resp.Err()
	}
	if err != nil {
		pin.Unpin()
		return 0, l.describe(err)
	}
	if res.Resp.Status == wire.StatusQueued {
		if !l.c.track(l) {
			l.withdrawPinned(pin)
			return 0, ErrClosed
		}
		l.mu.Lock()
		l.state, l.pin = stateQueued, pin
		l.mu.Unlock()
		return Queued, nil
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
	if err := l.adopt(res.Grant); err != nil {
		return 0, err
	}
	return Acquired, nil
}

// Wait completes a two-phase acquire: it returns true at once, without a
// round trip, if Enqueue already acquired the lock; otherwise it waits up
// to timeout (a ctx deadline that ends sooner wins) and returns false with
// a nil error if the timeout passes, which also gives up the place in the
// queue. Cancelling ctx returns ctx's error at once; the protocol cannot
// cancel a wait, so the server keeps the place until the timeout, and a
// lock it grants meanwhile is released at once.
func (l *Lock) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	l.op.Lock()
	defer l.op.Unlock()
	if l.err != nil {
		return false, l.err
	}
	l.mu.Lock()
	st, pin := l.state, l.pin
	if st == stateQueued {
		l.state, l.pin = stateIdle, nil
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
	secs := 0
	if timeout > 0 {
		var err error
		if secs, err = waitSeconds(ctx, timeout); err != nil {
			l.withdrawPinned(pin)
			return false, err
		}
	}
	// Always confirmed: dflockd 1.10 answers a wait with the token of a
	// grant it made earlier even when that grant's lease has run out
	// meanwhile and it no longer holds it. Only a renewal tells.
	return l.waitOn(ctx, pin, &wire.Request{Cmd: l.cmds.Wait, Key: l.key, Timeout: secs}, true)
}

// withdraw gives up a pending Enqueue.
func (l *Lock) withdraw() {
	l.mu.Lock()
	pin := l.pin
	if l.state == stateQueued {
		l.state, l.pin = stateIdle, nil
	}
	l.mu.Unlock()
	if pin != nil {
		l.c.untrack(l)
		l.withdrawPinned(pin)
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
