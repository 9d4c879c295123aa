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
// pinned to this handle until Wait or Close.
func (l *Lock) Enqueue(ctx context.Context) (Status, error) {
	l.op.Lock()
	defer l.op.Unlock()
	p, err := l.begin()
	if err != nil {
		return 0, err
	}
	pin, err := p.Pin(ctx)
	if err != nil {
		return 0, err
	}
	req := l.request(l.cmds.enqueue)
	sent := time.Now()
	res, err := pin.Do(ctx, &req)
	if err != nil {
		pin.Unpin()
		return 0, err
	}
	switch res.Resp.Status {
	case wire.StatusAcquired:
		// Consume the registration now (a wait answers at once with the
		// same token), so that Wait needs no round trip and the
		// connection can serve others.
		wait := wire.Request{Cmd: l.cmds.wait, Key: l.key, Timeout: 0}
		if w, err := pin.Do(ctx, &wait); err == nil && w.Hold != nil {
			w.Hold.Done() // the same grant, already held through res.Hold
		}
		pin.Unpin()
		l.held(p, res.Hold, res.Resp, sent)
		return Acquired, nil
	case wire.StatusQueued:
		l.mu.Lock()
		l.pin, l.pinPool = pin, p
		l.mu.Unlock()
		l.c.trackQueued(l, true)
		return Queued, nil
	default:
		pin.Unpin()
		return 0, res.Resp.Err()
	}
}

// Wait completes a two-phase acquire: it returns true at once, without a
// round trip, if Enqueue already acquired the lock; otherwise it waits up
// to timeout (a ctx deadline that ends sooner wins) and returns false with
// a nil error if the timeout passes, which also gives up the place in the
// queue. Cancelling ctx returns ctx's error; a grant that arrives after
// that is released at once.
func (l *Lock) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	l.op.Lock()
	defer l.op.Unlock()
	if l.err != nil {
		return false, l.err
	}
	l.mu.Lock()
	held, pin, p := l.token != "", l.pin, l.pinPool
	l.pin, l.pinPool = nil, nil
	l.mu.Unlock()
	if held {
		return true, nil
	}
	if pin == nil {
		return false, ErrNotEnqueued
	}
	l.c.trackQueued(l, false)
	defer pin.Unpin()
	secs := 0
	if timeout > 0 {
		var err error
		if secs, err = waitSeconds(ctx, timeout); err != nil {
			wctx, cancel := context.WithTimeout(context.Background(), l.c.closeTimeout)
			defer cancel()
			l.withdrawPinned(wctx, pin)
			return false, err
		}
	}
	req := wire.Request{Cmd: l.cmds.wait, Key: l.key, Timeout: secs}
	sent := time.Now()
	res, err := pin.Do(ctx, &req)
	return l.take(p, res, err, sent)
}

// withdraw gives up a pending Enqueue.
func (l *Lock) withdraw(ctx context.Context) {
	l.mu.Lock()
	pin := l.pin
	l.pin, l.pinPool = nil, nil
	l.mu.Unlock()
	if pin != nil {
		l.c.trackQueued(l, false)
		l.withdrawPinned(ctx, pin)
		pin.Unpin()
	}
}

// withdrawPinned consumes the registration on pin with a wait that cannot
// block and releases what it grants: the place in the queue is given up
// and the connection is clean for its next user.
func (l *Lock) withdrawPinned(ctx context.Context, pin *pool.Pinned) {
	wait := wire.Request{Cmd: l.cmds.wait, Key: l.key, Timeout: 0}
	res, err := pin.Do(ctx, &wait)
	if err != nil || res.Hold == nil {
		return
	}
	res.Hold.Done()
	rel := wire.Request{Cmd: l.cmds.release, Key: l.key, Token: res.Resp.Token}
	if _, err := pin.Do(ctx, &rel); err != nil {
		l.c.log.Debug("lock: withdrawing an enqueue", "key", l.key, "err", err)
	}
}
