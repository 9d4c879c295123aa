package lock

import (
	"cmp"
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
//
// A handle is always in exactly one state:
//
//	idle    nothing held, nothing pending (a new handle, or after Release)
//	queued  an Enqueue waits in the key's queue on a pinned connection
//	held    it holds one grant, renewed in the background
//	lost    its grant was lost; Release reports why, Acquire starts afresh
//	closed  Close was called; Close again is a no-op, Release returns
//	        ErrNotHeld, every other call ErrClosed
//
// idle → held (Acquire, TryAcquire, Enqueue acquired at once),
// idle → queued (Enqueue), queued → held or idle (Wait), held → idle
// (Release), held → lost (the grant is lost), lost → idle (Release) or
// held (Acquire), any → closed (Close).
type Lock struct {
	c     *Client
	key   string
	limit int // 0 for a lock
	cmds  *wire.Family
	opt   options
	err   error // a bad option, reported by every call

	op sync.Mutex // serialises Acquire, Release, Enqueue, Wait, Close
	// moving serialises bringing a held lock to the client's routing
	// (conform), which a fleet change does while Wait may hold op.
	moving sync.Mutex

	// mu guards the fields below. Lock order: Lock.op, then Lock.mu, then
	// the renewer's mu; a pool Grant's callbacks run with none of them
	// held.
	mu      sync.Mutex
	state   state
	grant   *pool.Grant   // held, lost: the grant
	set     *replicaSet   // held, queued, with Config.Replicas or moving in a transition: the servers
	rt      *routing      // held: the routing the grant or set follows
	entry   *renewal      // held: the grant's place in the renewer
	pin     *pool.Pinned  // queued: the connection the enqueue waits on
	lost    chan struct{} // made on demand: most locks are never asked
	lostErr error
	cancel  context.CancelCauseFunc // WithLock's, while fn runs
	heldAt  time.Time               // held: since when, for the metrics
	heldOn  string                  // held: the server the metrics name
	// member is the Set the handle belongs to (LockAll), told of its
	// loss; nil for a handle of its own. Set once, at creation.
	member *Set
	// holdsOthers is set by the member's Set while it holds other
	// members: a wait then does not wait for a connection.
	holdsOthers bool
}

type state int

const (
	stateIdle state = iota
	stateQueued
	stateHeld
	stateLost
	stateClosed
)

func newLock(c *Client, key string, limit int, opts []Option) *Lock {
	l := &Lock{c: c, key: key, limit: limit, cmds: &wire.LockFamily, opt: defaultOptions()}
	if limit > 0 {
		l.cmds = &wire.SemaphoreFamily
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
// turns "" the moment the lock can no longer be known to be held: when
// its lease, as the server counts it, may have run out without a
// confirmed renewal.
//
// With Config.Replicas each server issues its own token. Token gives one
// of them, the same as long as the replica that issued it is held: at
// first that of the first replica held in the key's order (HeldOn); if
// that replica is lost, another's.
func (l *Lock) Token() string {
	l.mu.Lock()
	g, set := l.grant, l.set
	held := l.state == stateHeld
	l.mu.Unlock()
	if set != nil {
		return l.setToken()
	}
	if !held {
		return ""
	}
	if !time.Now().Before(g.Deadline()) {
		g.Drop(errDeadline)
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != stateHeld || l.grant != g {
		return ""
	}
	return g.Token()
}

// errUnwanted is why a grant no handle will hold (it arrived as the
// client closed, or its confirmation was cut short) is dropped.
var errUnwanted = errors.New("not wanted")

// errDeadline is why a grant is lost when its deadline passes.
var errDeadline = errors.New("no renewal confirmed within its lease, or no reply on its connection within the server's read timeout")

// Lease returns the lease the server granted (and last renewed), or 0
// when the lock is not held.
func (l *Lock) Lease() time.Duration {
	l.mu.Lock()
	g := l.grant
	held := l.state == stateHeld
	if held && l.set != nil {
		g = nil
		for _, rg := range l.set.grants {
			g = cmp.Or(g, rg)
		}
	}
	l.mu.Unlock()
	if g == nil {
		return 0
	}
	_, lease := g.Lease()
	return lease
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

// Err returns why the lock was lost once Lost is closed (an error
// matching ErrLockLost that names the cause: a refused renewal, the lease
// running out, the connection breaking), and nil otherwise, as
// context.Context's Err goes with Done.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// request builds an acquire or enqueue of the key, with the lease to ask
// for.
func (l *Lock) request(cmd wire.Command) wire.Request {
	return wire.Request{Cmd: cmd, Key: l.key, Limit: l.limit, Lease: seconds(l.opt.lease)}
}

// Acquire takes the lock, waiting up to the acquire timeout, including any
// wait for a free connection. It returns false with a nil error when the
// timeout passes, and ctx's error when ctx ends first; a grant that
// arrives after that is released at once. Once held, the lock is renewed
// in the background until Release, Close or loss. When the key's queue is
// full (the server's --max-waiters) it returns an error matching
// ErrMaxWaiters at once.
func (l *Lock) Acquire(ctx context.Context) (bool, error) {
	ctx, end := l.span(ctx, "dflock.Acquire")
	ok, err := l.acquire(ctx, l.opt.acquireTimeout)
	end(acquiredOutcome(ctx, ok, err), err)
	return ok, err
}

// TryAcquire takes the lock only if it is free and nobody waits for it. It
// never waits on the server. A key whose queue is full (the server's
// --max-waiters) is busy like any other: false with a nil error, although
// dflockd answers a try-lock there with error_max_waiters, because a
// try-lock never joins the queue it complains about.
func (l *Lock) TryAcquire(ctx context.Context) (bool, error) {
	ctx, end := l.span(ctx, "dflock.TryAcquire")
	ok, err := l.acquire(ctx, 0)
	end(acquiredOutcome(ctx, ok, err), err)
	return ok, err
}

// errWaitOver is the cause of an acquire's own deadline, to tell it from
// the caller's.
var errWaitOver = errors.New("lock: acquire timeout passed")

// replySlack is how long past the timeout sent to the server an acquire
// waits for its answer: the server rounds up to whole seconds and the
// reply has to travel.
const replySlack = 2 * time.Second

func (l *Lock) acquire(ctx context.Context, timeout time.Duration) (ok bool, err error) {
	l.op.Lock()
	defer l.op.Unlock()
	start := time.Now()
	deadline := start.Add(timeout)
	server := ""
	defer func() { l.acquireDone(ctx, server, start, ok, err) }()
	if err := l.ready(); err != nil {
		return false, err
	}
	rt := l.c.route.Load()
	p, routes, err := l.place(rt)
	if err != nil {
		return false, err
	}
	if p != nil {
		server = p.Addr()
	} else {
		server = routes[0][0]
	}
	if p != nil {
		g, gerr := l.acquireOn(ctx, p, timeout, deadline)
		ok, err = l.hold(rt, g, gerr)
	} else {
		ok, err = l.acquireSet(ctx, rt, routes, timeout, deadline)
	}
	return l.follow(ctx, rt, deadline, ok, err)
}

// follow brings a lock just taken under rt (ok, err: how the taking went)
// to the client's routing if a fleet change came meanwhile, so that no
// lock is handed out behind the change's back.
func (l *Lock) follow(ctx context.Context, rt *routing, deadline time.Time, ok bool, err error) (bool, error) {
	if ok && err == nil && l.c.route.Load() != rt {
		return l.conform(ctx, deadline, true)
	}
	return ok, err
}

// place finds where the key is taken under rt: one server's pool (the
// common case), or the routes of a replicated key, or of a key that
// moves in a transition, for a replicaSet.
func (l *Lock) place(rt *routing) (*pool.Pool, [][]string, error) {
	if l.c.replicas == 1 {
		addr, moved, err := rt.owner(l.key)
		if err != nil {
			return nil, nil, err
		}
		if !moved {
			p, err := l.c.poolAt(addr)
			return p, nil, err
		}
	}
	routes, err := rt.routes(l.key, l.c.replicas)
	return nil, routes, err
}

// acquireOn takes the key on p's server, waiting until deadline when
// timeout is positive. It returns the grant, nil with a nil error when the
// key stayed busy, or the error.
func (l *Lock) acquireOn(ctx context.Context, p *pool.Pool, timeout time.Duration, deadline time.Time) (*pool.Grant, error) {
	// A try-lock first, pipelined on a shared connection: a free key
	// costs one round trip and no exclusive connection. It never jumps a
	// queue: the server refuses it while anyone waits. A server that does
	// not answer it by the acquire's deadline (and the slack a reply
	// gets) leaves the key not acquired; a grant it sends later is
	// released at once.
	req := l.request(l.cmds.Acquire)
	res, err := p.DoBy(ctx, &req, deadline.Add(replySlack))
	if g, done, err := l.tried(ctx, p.Addr(), res, err, timeout); done {
		return g, err
	}
	return l.waitFor(ctx, p, deadline)
}

// tried reads the answer (res, err) of a try-lock sent to addr by an
// acquire with timeout: the grant, or nil with a nil error when the key
// was busy, or the error; done is false when the acquire should go on to
// wait for the key.
func (l *Lock) tried(ctx context.Context, addr string, res pool.Result, err error, timeout time.Duration) (g *pool.Grant, done bool, _ error) {
	if errors.Is(err, pool.ErrNoReply) {
		l.c.log.Warn("lock: a try-lock had no answer by the acquire's deadline: the server is stalled or overloaded", "key", l.key, "server", addr)
		return nil, true, nil
	}
	g, err = l.grantFrom(ctx, addr, res, err, false)
	if timeout <= 0 && errors.Is(err, ErrMaxWaiters) {
		return nil, true, nil
	}
	// An Acquire that would wait on a full queue fails here: the caller
	// can back off rather than pin a connection to be refused.
	return g, g != nil || err != nil || timeout <= 0, err
}

// waitFor is the blocking half of acquireOn, after a try-lock found the
// key busy: a lock request that waits on p's server, on a pinned
// connection, until deadline.
func (l *Lock) waitFor(ctx context.Context, p *pool.Pool, deadline time.Time) (*pool.Grant, error) {
	req := l.request(l.cmds.Acquire)
	// The wait for a free connection counts against the timeout too.
	wctx, cancel := context.WithDeadlineCause(ctx, deadline, errWaitOver)
	defer cancel()
	pin, err := l.pinFor(wctx, p)
	if errors.Is(err, pool.ErrNoFreeConn) {
		return nil, err
	}
	if err != nil && ctx.Err() == nil && context.Cause(wctx) == errWaitOver {
		// Not the key's fault: every exclusive connection was busy, or
		// kept by a lock taken after a wait.
		l.c.log.Warn("lock: acquire timed out waiting for a free connection; raise Pool.MaxConns", "key", l.key, "server", p.Addr())
	}
	if err != nil {
		return l.grantFrom(ctx, p.Addr(), pool.Result{}, ownDeadline(ctx, wctx, err), false)
	}
	if req.Timeout, err = waitSeconds(ctx, time.Until(deadline)); err != nil {
		pin.Unpin()
		return nil, err
	}
	return l.waitOn(ctx, p.Addr(), pin, &req, false)
}

// pinFor takes an exclusive connection to p's server for a wait: at once
// or not at all (pool.ErrNoFreeConn) for a member of a Set that holds
// other members, which must never wait for a connection (see Set).
func (l *Lock) pinFor(ctx context.Context, p *pool.Pool) (*pool.Pinned, error) {
	if l.holdsOthers {
		return p.TryPin(ctx)
	}
	return p.Pin(ctx)
}

// waitOn sends a blocking request (a lock with a timeout, a wait) on pin,
// unpins, and returns the grant it brings (nil if none). The server
// answers by its timeout; past that and replySlack the server is taken to
// be stuck, and the result is "not acquired".
func (l *Lock) waitOn(ctx context.Context, addr string, pin *pool.Pinned, req *wire.Request, confirm bool) (*pool.Grant, error) {
	rctx, cancel := context.WithTimeoutCause(ctx, time.Duration(req.Timeout)*time.Second+replySlack, errWaitOver)
	defer cancel()
	start := time.Now()
	res, err := pin.Do(rctx, req)
	pin.Unpin()
	g, err := l.grantFrom(ctx, addr, res, ownDeadline(ctx, rctx, err), confirm)
	if m := l.c.metrics; g != nil && !m.off {
		m.queued.Record(ctx, time.Since(start).Seconds(), m.forServer(addr).plain[l.kindIdx()].rec...)
	}
	return g, err
}

// ownDeadline turns the end of a wait bounded by the acquire timeout into
// "not acquired" (a nil error, for take), and leaves other errors alone.
func ownDeadline(ctx, wctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && context.Cause(wctx) == errWaitOver {
		return wire.ErrTimeout
	}
	return err
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

// ready checks that the handle may acquire.
func (l *Lock) ready() error {
	if l.err != nil {
		return l.err
	}
	l.mu.Lock()
	st := l.state
	l.mu.Unlock()
	switch st {
	case stateHeld:
		return ErrHeld
	case stateQueued:
		return ErrAlreadyEnqueued
	case stateClosed:
		return ErrClosed
	}
	return nil
}

// hold makes g, if any, taken under rt, the handle's grant: Acquire's
// result.
func (l *Lock) hold(rt *routing, g *pool.Grant, err error) (bool, error) {
	if g == nil || err != nil {
		return false, err
	}
	if err := l.adopt(rt, g); err != nil {
		return false, err
	}
	return true, nil
}

// grantFrom turns a reply from the server at addr into the grant it
// brings: nil with a nil error when the server answered timeout, the
// error (saying which key, of which kind, on which server) otherwise. confirm asks for
// the grant to be confirmed whatever its age.
func (l *Lock) grantFrom(ctx context.Context, addr string, res pool.Result, err error, confirm bool) (*pool.Grant, error) {
	if err == nil {
		err = res.Resp.Err()
	}
	if errors.Is(err, wire.ErrTimeout) {
		return nil, nil
	}
	if err != nil {
		return nil, l.describe(err, addr)
	}
	g := res.Grant
	_, lease := g.Lease()
	if late := time.Since(res.Sent); confirm || late >= min(time.Duration(float64(lease)*l.opt.renewRatio), g.Pool().KeepAlive()) {
		// The grant waited on the server: its lease, and the server's
		// read-timeout clock on its connection, started when the server
		// granted it, an instant the client cannot see. Counted from the
		// request, the lock would look nearly expired; a renewal on the
		// owning connection proves both from now on.
		if err := g.Confirm(ctx, seconds(lease)); err != nil {
			if g.Err() == nil {
				g.Drop(errUnwanted)
			}
			return nil, fmt.Errorf("lock: %q was granted on %s after a wait, but confirming it failed: %w", l.key, g.Addr(), err)
		}
	}
	return g, nil
}

// describe says which key, of which kind, on which server (addr) an
// error of a request for it is about; it still matches the same
// sentinels. The caller's own context errors pass unchanged.
func (l *Lock) describe(err error, addr string) error {
	var done *describedError
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &done) {
		return err
	}
	if (errors.Is(err, pool.ErrClosed) || errors.Is(err, pool.ErrBroken)) && l.c.isClosed() {
		// The client closed under the call: its connections went with it.
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	what := l.what()
	if addr != "" {
		what += " on " + addr
	}
	d := &describedError{what: what, err: err}
	if errors.Is(err, ErrAuth) {
		d.hint = " (give the token in Config.Pool.AuthToken)"
	}
	return d
}

// describedError is an error of a request that says which key, of which
// kind, on which server it is about (see describe).
type describedError struct {
	what, hint string
	err        error
}

func (e *describedError) Error() string { return e.what + ": " + e.err.Error() + e.hint }
func (e *describedError) Unwrap() error { return e.err }

// what names the handle's key and kind, for errors.
func (l *Lock) what() string {
	if l.limit > 0 {
		return fmt.Sprintf("semaphore %q (limit %d)", l.key, l.limit)
	}
	return fmt.Sprintf("lock %q", l.key)
}

// adopt makes the handle the holder of g, taken under rt, and starts
// renewing it.
func (l *Lock) adopt(rt *routing, g *pool.Grant) error {
	if !l.c.track(l) {
		g.Drop(errUnwanted)
		return ErrClosed
	}
	e := &renewal{l: l, g: g, idx: -1}
	l.mu.Lock()
	l.state, l.grant, l.entry, l.rt = stateHeld, g, e, rt
	l.heldFromLocked(g.Addr())
	if l.lostErr != nil {
		l.lost, l.lostErr = nil, nil // a new acquisition, a new channel
	}
	l.mu.Unlock()
	l.c.renewer.add(e)
	// Last: if the grant is already lost, this reports it now.
	g.OnLost(func(err error) { l.grantLost(g, err) })
	return nil
}

// Release releases the lock and stops renewing it. It returns ErrNotHeld
// if the lock is not held, and an error matching ErrLockLost if it was
// lost meanwhile (its lease had run out on the server).
func (l *Lock) Release(ctx context.Context) error {
	l.op.Lock()
	defer l.op.Unlock()
	ctx, end := l.span(ctx, "dflock.Release")
	err := l.release(ctx)
	end("", err)
	return err
}

func (l *Lock) release(ctx context.Context) error {
	g, set, err := l.letGo()
	if set.s != nil {
		return l.releaseSet(ctx, set.s, set.groups, set.grants)
	}
	if g == nil {
		return err
	}
	return releaseError(g.Release(ctx))
}

// releaseError is what Release reports for the error of a grant's
// release.
func releaseError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pool.ErrGrantLost):
		return fmt.Errorf("%w: %w", ErrLockLost, err)
	}
	return fmt.Errorf("lock: %w", err)
}

// letGoneSet is what letGo took out of a held replicaSet: its grants, to
// give back, and its groups as they were, to judge the releases by.
type letGoneSet struct {
	s      *replicaSet
	groups []replicaGroup
	grants []*pool.Grant
}

// letGo moves a held or lost handle to idle and stops renewing; it
// returns the grant to give back if the lock was held (or the grants of
// its set, with Config.Replicas or in a transition), else why not (the
// loss, or ErrNotHeld).
func (l *Lock) letGo() (*pool.Grant, letGoneSet, error) {
	l.mu.Lock()
	st, g, e, lostErr := l.state, l.grant, l.entry, l.lostErr
	heldAt, heldOn := l.heldAt, l.heldOn
	var set letGoneSet
	var entries []*renewal
	switch st {
	case stateHeld, stateLost:
		if st == stateHeld && l.set != nil {
			set.s, set.groups = l.set, l.set.takenLocked()
			set.grants, entries = l.set.endLocked()
		}
		l.state, l.grant, l.entry, l.set, l.rt = stateIdle, nil, nil, nil, nil
	}
	l.mu.Unlock()
	switch st {
	case stateLost:
		return nil, set, lostErr
	case stateHeld:
		l.c.renewer.remove(e)
		for _, e := range entries {
			l.c.renewer.remove(e)
		}
		l.c.untrack(l)
		l.heldUntil(heldAt, heldOn, true, 0)
		return g, set, nil
	}
	return nil, set, ErrNotHeld
}

// Close releases the lock if held, withdraws a pending Enqueue, stops
// renewing, and retires the handle. Safe to call twice, and after the
// lock was lost.
func (l *Lock) Close() error {
	l.op.Lock()
	defer l.op.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), l.c.closeTimeout)
	defer cancel()
	l.withdraw()
	err := l.release(ctx)
	l.mu.Lock()
	l.state = stateClosed
	l.mu.Unlock()
	if err != nil && !errors.Is(err, ErrNotHeld) && !errors.Is(err, ErrLockLost) {
		return err
	}
	return nil
}

// grantLost is g's loss callback: if g is still the handle's grant, the
// lock is lost: Token turns "", Lost closes, WithLock's context is
// cancelled, the OnLost option runs. A loss of any earlier grant is
// ignored.
func (l *Lock) grantLost(g *pool.Grant, err error) {
	l.mu.Lock()
	if l.state != stateHeld || l.grant != g {
		l.mu.Unlock()
		return
	}
	e := l.entry
	l.entry = nil
	l.lose(fmt.Errorf("%w: %q on %s: %w", ErrLockLost, l.key, g.Addr(), err), g.Addr(), lossReport{[]*pool.Grant{g}, 1, 1})
	l.c.renewer.remove(e)
}

// lossReport is what a loss is about, for the tests' hook.
type lossReport struct {
	grants     []*pool.Grant // every grant of the acquisition, lost ones too
	quorum     int           // how many of them the lock needed
	heldBefore int           // how many it held just before the loss
}

// lose moves the held handle to lost and reports it: Token turns "", Lost
// closes, WithLock's context is cancelled, the OnLost option runs. l.mu is
// held, and released.
func (l *Lock) lose(err error, server string, r lossReport) {
	cancel := l.cancel
	// Counted before anyone hears of it: a reader of the metrics woken
	// by Lost finds the loss there.
	l.heldUntil(l.heldAt, l.heldOn, false, lossCause(err))
	l.state, l.lostErr = stateLost, err
	// The tests' hook too, so that a test woken by Lost finds the loss
	// reported; it must not call back into l.
	l.c.lossHook(r, err)
	if l.lost != nil {
		close(l.lost)
	} else {
		l.lost = closedChan
	}
	l.mu.Unlock()

	l.c.untrack(l)
	l.c.losses.lost(l.key, server, err)
	if l.member != nil {
		l.member.memberLost(l.key, err)
	}
	if cancel != nil {
		cancel(ErrLockLost)
	}
	if f := l.opt.onLost; f != nil {
		go f(l.key, err)
	}
}
