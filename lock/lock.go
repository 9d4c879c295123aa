package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// Lock is a handle on one key: a lock, or a slot of a semaphore (see
// Semaphore). Handles are cheap; make one per critical section or keep one
// and acquire it again. A handle's methods are not meant to be called
// concurrently; they are serialised if they are.
type Lock struct {
	c     *Client
	key   string
	limit int // 0 for a lock
	cmds  commands
	opt   options
	err   error // a bad option, reported by every call

	op sync.Mutex // serialises Acquire, Release, Enqueue, Wait, Close

	mu      sync.Mutex
	token   string
	lease   time.Duration
	expires time.Time // the end of the last lease the server confirmed
	p       *pool.Pool
	hold    *pool.Hold
	lost    chan struct{} // made on demand: most locks are never asked
	lostErr error
	pin     *pool.Pinned // between a queued Enqueue and its Wait
	pinPool *pool.Pool   // the server pin belongs to
	cancel  context.CancelCauseFunc

	// Guarded by the renewer's lock.
	due      time.Time // when the renewer next looks at it
	renewAt  time.Time // when the next renewal is due
	heapIdx  int
	renewing bool
}

// deadlineLocked is the moment the lock stops being ours, whichever comes
// first: the end of the last lease the server confirmed, or the server's
// read timeout on the connection that holds the lock, counted from the
// last request it answered there (if that connection falls silent, say in
// a partition, the server releases the lock then, even if the lease is
// longer). l.mu must be held.
func (l *Lock) deadlineLocked() time.Time {
	// A margin so that the loss is reported (Lost closes, the callback
	// runs) before the server can hand the lock on, despite timer slop.
	d := l.expires.Add(-min(l.lease/20, 250*time.Millisecond))
	if l.hold != nil {
		if heard := l.hold.Conn().Heard(); !heard.IsZero() {
			rt := l.p.ServerReadTimeout()
			if c := heard.Add(rt - min(rt/10, time.Second)); c.Before(d) {
				d = c
			}
		}
	}
	return d
}

// expiredErr is the loss at the deadline.
func (l *Lock) expiredErr() error {
	return fmt.Errorf("%w: %q reached its deadline: no renewal confirmed within the lease, or no reply on its connection within the server's read timeout", ErrLockLost, l.key)
}

func (l *Lock) deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadlineLocked()
}

type commands struct{ acquire, release, renew, enqueue, wait wire.Command }

var (
	lockCommands = commands{wire.CmdLock, wire.CmdRelease, wire.CmdRenew, wire.CmdEnqueue, wire.CmdWait}
	semCommands  = commands{wire.CmdSemLock, wire.CmdSemRelease, wire.CmdSemRenew, wire.CmdSemEnqueue, wire.CmdSemWait}
)

func newLock(c *Client, key string, limit int, opts []Option) *Lock {
	l := &Lock{c: c, key: key, limit: limit, cmds: lockCommands, opt: defaultOptions(), heapIdx: -1}
	if limit > 0 {
		l.cmds = semCommands
	}
	for _, o := range opts {
		o(&l.opt)
	}
	l.err = l.opt.check()
	if l.err == nil {
		l.err = wire.CheckKey(key)
	}
	return l
}

// Key returns the key.
func (l *Lock) Key() string { return l.key }

// Token returns the holder's token, or "" when the lock is not held. It
// turns "" the moment the last confirmed lease ends without a renewal.
func (l *Lock) Token() string {
	l.mu.Lock()
	tok, expired := l.token, l.token != "" && !time.Now().Before(l.deadlineLocked())
	l.mu.Unlock()
	if expired {
		l.markLost(l.expiredErr())
		return ""
	}
	return tok
}

// Lease returns the lease the server granted (and last renewed), or 0
// when the lock is not held.
func (l *Lock) Lease() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token == "" {
		return 0
	}
	return l.lease
}

// Lost returns a channel that is closed when the lock, held, is lost. Each
// acquisition has its own channel; a released lock's channel stays open.
func (l *Lock) Lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		l.lost = make(chan struct{})
	}
	return l.lost
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (l *Lock) request(cmd wire.Command) wire.Request {
	req := wire.Request{Cmd: cmd, Key: l.key, Limit: l.limit}
	if cmd == l.cmds.acquire || cmd == l.cmds.enqueue || cmd == l.cmds.renew {
		req.Lease = seconds(l.opt.lease)
	}
	return req
}

// Acquire takes the lock, waiting up to the acquire timeout. It returns
// false with a nil error when the timeout passes, and ctx's error when ctx
// ends first; a grant that arrives after that is released at once. Once
// held, the lock is renewed in the background until Release, Close or
// loss.
func (l *Lock) Acquire(ctx context.Context) (bool, error) {
	return l.acquire(ctx, l.opt.acquireTimeout)
}

// TryAcquire takes the lock only if it is free and nobody waits for it. It
// never waits on the server.
func (l *Lock) TryAcquire(ctx context.Context) (bool, error) {
	return l.acquire(ctx, 0)
}

func (l *Lock) acquire(ctx context.Context, timeout time.Duration) (bool, error) {
	l.op.Lock()
	defer l.op.Unlock()
	p, err := l.begin()
	if err != nil {
		return false, err
	}
	// A try-lock first, pipelined on a shared connection: a free key
	// costs one round trip and no exclusive connection. It never jumps a
	// queue: the server refuses it while anyone waits.
	req := l.request(l.cmds.acquire)
	sent := time.Now()
	res, err := p.Do(ctx, &req)
	if ok, err := l.take(p, res, err, sent); ok || err != nil || timeout <= 0 {
		return ok, err
	}
	secs, err := waitSeconds(ctx, timeout)
	if err != nil {
		return false, err
	}
	req.Timeout = secs
	sent = time.Now()
	res, err = p.Do(ctx, &req)
	return l.take(p, res, err, sent)
}

// waitSeconds is how long the server may block: the timeout or what is
// left of ctx, whichever ends first, rounded up to whole seconds (the
// client still returns at ctx's deadline).
func waitSeconds(ctx context.Context, timeout time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	return max(seconds(timeout), 1), nil
}

// begin checks that the handle may acquire and finds the key's server.
func (l *Lock) begin() (*pool.Pool, error) {
	if l.err != nil {
		return nil, l.err
	}
	l.mu.Lock()
	held, pinned := l.token != "", l.pin != nil
	l.mu.Unlock()
	if held {
		return nil, ErrHeld
	}
	if pinned {
		return nil, ErrAlreadyEnqueued
	}
	return l.c.poolFor(l.key)
}

// take records a grant, or turns the reply into Acquire's result.
func (l *Lock) take(p *pool.Pool, res pool.Result, err error, sent time.Time) (bool, error) {
	if err != nil {
		return false, err
	}
	if err := res.Resp.Err(); err != nil {
		if errors.Is(err, wire.ErrTimeout) {
			return false, nil
		}
		return false, err
	}
	l.held(p, res.Hold, res.Resp, sent)
	return true, nil
}

// held makes the handle the holder of a grant that the server confirmed
// after sent, and starts renewing it.
func (l *Lock) held(p *pool.Pool, h *pool.Hold, resp wire.Response, sent time.Time) {
	lease := time.Duration(resp.Lease) * time.Second
	l.mu.Lock()
	l.token, l.lease, l.p, l.hold = resp.Token, lease, p, h
	// Measured from when the request left, the lease ends no later than
	// the server thinks it does.
	l.expires = sent.Add(lease)
	if l.lostErr != nil {
		l.lost, l.lostErr = nil, nil // a new acquisition, a new channel
	}
	l.mu.Unlock()
	l.c.track(l, true)
	l.c.renewer.schedule(l, sent.Add(time.Duration(float64(lease)*l.opt.renewRatio)))
	// Last: if the connection already broke, this reports the loss now,
	// and markLost undoes the two lines above.
	addr := p.Addr()
	h.OnLost(func(err error) {
		l.markLost(fmt.Errorf("%w: connection to %s broke: %v", ErrLockLost, addr, err))
	})
}

// Release releases the lock and stops renewing it. It returns ErrNotHeld
// if the lock is not held, and an error matching ErrLockLost if it was
// lost meanwhile (its lease had run out on the server).
func (l *Lock) Release(ctx context.Context) error {
	l.op.Lock()
	defer l.op.Unlock()
	return l.release(ctx)
}

func (l *Lock) release(ctx context.Context) error {
	l.mu.Lock()
	tok, p, h, lostErr := l.token, l.p, l.hold, l.lostErr
	l.token, l.hold = "", nil
	l.mu.Unlock()
	if tok == "" {
		if lostErr != nil {
			return lostErr
		}
		return ErrNotHeld
	}
	l.c.renewer.remove(l)
	l.c.track(l, false)
	h.Done()
	req := l.request(l.cmds.release)
	req.Token = tok
	res, err := p.Do(ctx, &req)
	if err != nil {
		return fmt.Errorf("lock: release of %q: %w (the lease will run out on the server)", l.key, err)
	}
	if err := res.Resp.Err(); err != nil {
		return fmt.Errorf("%w: %q was no longer held on %s: %w", ErrLockLost, l.key, p.Addr(), err)
	}
	return nil
}

// Close releases the lock if held, withdraws a pending Enqueue, and stops
// renewing. Safe to call twice, and after the lock was lost.
func (l *Lock) Close() error {
	l.op.Lock()
	defer l.op.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), l.c.closeTimeout)
	defer cancel()
	l.withdraw(ctx)
	if err := l.release(ctx); err != nil && !errors.Is(err, ErrNotHeld) && !errors.Is(err, ErrLockLost) {
		return err
	}
	return nil
}

// markLost records that the lock is gone: Token turns "", Lost closes,
// WithLock's context is cancelled, the OnLost callback runs. Only the
// first call for an acquisition has an effect.
func (l *Lock) markLost(err error) {
	l.mu.Lock()
	if l.token == "" {
		l.mu.Unlock()
		return
	}
	tok, p, h, cancel := l.token, l.p, l.hold, l.cancel
	l.token, l.hold, l.lostErr = "", nil, err
	if l.lost != nil {
		close(l.lost)
	} else {
		l.lost = closedChan
	}
	l.mu.Unlock()

	l.c.renewer.remove(l)
	l.c.track(l, false)
	h.Done()
	l.c.log.Error("lock lost", "key", l.key, "server", p.Addr(), "err", err)
	if cancel != nil {
		cancel(ErrLockLost)
	}
	if f := l.opt.onLost; f != nil {
		go f(l.key, err)
	}
	if h.Conn().Err() == nil {
		// The server may still hold it (a stalled renewal, say): give it
		// back so that it is not left held by nobody.
		l.c.releaseQuietly(p, l.cmds.release, l.key, tok)
	}
}
