package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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

	// mu guards the fields below (see the lock order below). They change together,
	// through moveLocked.
	mu      sync.Mutex
	state   state
	h       *holder       // held, queued: what the acquisition holds, or waits with
	pin     *pool.Pinned  // queued: the connection the enqueue waits on, if any
	rt      *routing      // held, queued: the routing the holder follows
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
	holdsOthers atomic.Bool

	// first is the holder of the handle's first acquisition on one
	// server (firstTaken once used; op guards both): a handle made for
	// one critical section costs one allocation, not two.
	first      holder
	firstTaken bool
}

// The lock order: the order in which the client's mutexes are taken,
// the only one: a goroutine holding one of them takes only those after
// it.
//
//	Client.moveMu       a fleet change
//	Lock.op             a call on the handle (Acquire, Release, ...)
//	Lock.moving         bringing a held lock to a new routing
//	Set.mu              a Set's state (a member's loss takes it with no
//	                    Lock.mu held)
//	Client.mu           pools, tracked handles
//	Lock.mu             the handle's state
//	holder.mu           the holder's slots
//	tasks.mu            the client's goroutines (a re-take is planned
//	                    under holder.mu)
//	renewer.mu          the renewal heap
//
// A pool Grant's calls that may report a loss (Drop, Release, OnLost)
// run with no Lock.mu or holder.mu held: the loss callback takes both.

type state int

const (
	stateIdle state = iota
	stateQueued
	stateHeld
	stateLost
	stateClosed
)

var stateNames = [...]string{"idle", "queued", "held", "lost", "closed"}

func (s state) String() string { return stateNames[s] }

// allowed lists the transitions of the handle's documented states.
var allowed = [...][5]bool{
	stateIdle:   {stateQueued: true, stateHeld: true, stateClosed: true},
	stateQueued: {stateIdle: true},
	stateHeld:   {stateIdle: true, stateLost: true},
	stateLost:   {stateIdle: true, stateHeld: true},
	stateClosed: {stateClosed: true},
}

// change is what the handle holds in its new state: the holder (held,
// queued, whose routing the handle follows), the pinned connection
// (queued); for lost, why.
type change struct {
	h   *holder
	pin *pool.Pinned
	err error
}

// moveLocked moves the handle to state to, with what c gives it, and
// keeps the books: the queued gauge, the held gauge and the hold's
// metrics, a new Lost channel for a new acquisition, the loss's error
// and the closing of Lost. A transition the states do not allow is a
// bug, and panics. l.mu is held.
func (l *Lock) moveLocked(to state, c change) {
	from := l.state
	if !allowed[from][to] {
		panic(fmt.Sprintf("lock: %s: no transition from %s to %s", l.what(), from, to))
	}
	m := l.c.metrics
	if from == stateQueued {
		m.queuedNow.Add(-1)
	}
	switch to {
	case stateQueued:
		m.queuedNow.Add(1)
	case stateHeld:
		l.heldFromLocked(c.h.addr(0))
		if l.lostErr != nil {
			l.lost, l.lostErr = nil, nil // a new acquisition, a new channel
		}
	case stateLost:
		// Counted before anyone hears of it: a reader of the metrics
		// woken by Lost finds the loss there. A lock released by
		// Client.Close under its holder is a release.
		l.heldUntil(l.heldAt, l.heldOn, errors.Is(c.err, errClosedUnder), lossCause(c.err))
		l.lostErr = c.err
		if l.lost != nil {
			close(l.lost)
		} else {
			l.lost = closedChan
		}
	case stateIdle, stateClosed:
		if from == stateHeld {
			l.heldUntil(l.heldAt, l.heldOn, true, 0)
		}
	}
	l.state, l.h, l.pin, l.rt = to, c.h, c.pin, nil
	if c.h != nil {
		l.rt = c.h.rt
	}
}

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
	if h := l.holding(); h != nil {
		return h.token()
	}
	return ""
}

// holding returns the holder of a held lock, or nil.
func (l *Lock) holding() *holder {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != stateHeld {
		return nil
	}
	return l.h
}

// errUnwanted is why a grant no handle will hold (it arrived as the
// client closed, or its confirmation was cut short) is dropped.
var errUnwanted = errors.New("not wanted")

// errDeadline is why a grant is lost when its deadline passes.
var errDeadline = errors.New("no renewal confirmed within its lease, or no reply on its connection within the server's read timeout")

// Lease returns the lease the server granted (and last renewed), or 0
// when the lock is not held.
func (l *Lock) Lease() time.Duration {
	if h := l.holding(); h != nil {
		return h.lease()
	}
	return 0
}

// HeldOn lists the servers on which the lock is held now: its server,
// or, with Config.Replicas, every replica it holds, in the key's replica
// order. It is empty when the lock is not held.
func (l *Lock) HeldOn() []string {
	if h := l.holding(); h != nil {
		return h.heldOn()
	}
	return nil
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
// ErrMaxWaiters at once. The timeout bounds the whole call, whatever the
// servers do, to within 50 ms: a server that does not answer the first
// try-lock by then is an error naming it, matching pool.ErrNoReply (a
// stalled server is not a busy key), and so is one that stopped answering
// while the call waited (it does not answer a ping at the timeout).
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
// try-lock never joins the queue it complains about. A server that does
// not answer within Config.ReplicaTimeout is an error matching
// pool.ErrNoReply, not "busy".
func (l *Lock) TryAcquire(ctx context.Context) (bool, error) {
	ctx, end := l.span(ctx, "dflock.TryAcquire")
	ok, err := l.acquire(ctx, 0)
	end(acquiredOutcome(ctx, ok, err), err)
	return ok, err
}

// errWaitOver is the cause of an acquire's own deadline, to tell it from
// the caller's.
var errWaitOver = errors.New("lock: acquire timeout passed")

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
	h, err := l.holderFor(rt)
	if err != nil {
		return false, err
	}
	server = h.addr(0)
	h.deadline, h.tryOnly = deadline, timeout <= 0
	if len(h.groups) > 1 && (timeout <= 0 || !l.c.contention.recent(l.key)) {
		// A key that moves in a transition: a try-lock to every server of
		// both routes at once, so that a free key costs one round trip,
		// not one per route. Holding the new route's servers before the
		// old route's is safe as long as nothing waits out of order: a
		// busy old route gives the new one back before it waits (yield).
		// Every answer is awaited: a second try-lock sent to a server
		// whose first is still in flight would find the key taken by
		// this very holder.
		h.tryAll(ctx, allReplicas(len(h.slots)), h.answerWait(), false)
	}
	ok, err = h.takeGroups(ctx, timeout, deadline, nil)
	if ok && err == nil {
		ok, err = l.adopt(h)
	}
	return l.settle(ctx, rt, deadline, ok, err)
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
	return l.waitOn(ctx, p, pin, &req, deadline, false)
}

// pinFor takes an exclusive connection to p's server for a wait: at once
// or not at all (pool.ErrNoFreeConn) for a member of a Set that holds
// other members, which must never wait for a connection (see Set).
func (l *Lock) pinFor(ctx context.Context, p *pool.Pool) (*pool.Pinned, error) {
	if l.holdsOthers.Load() {
		return p.TryPin(ctx)
	}
	return p.Pin(ctx)
}

// waitOn sends a blocking request (a lock with a timeout, a wait) on pin,
// a connection of p, unpins, and returns the grant it brings (nil if
// none). It waits until deadline, the caller's, not the server's timeout:
// that is in whole seconds, and a stalled server would not keep it. Past
// the deadline the result is "not acquired", if the server still answers
// (a ping, within pingAfterWait); a lock granted later is released at
// once.
func (l *Lock) waitOn(ctx context.Context, p *pool.Pool, pin *pool.Pinned, req *wire.Request, deadline time.Time, confirm bool) (*pool.Grant, error) {
	rctx, cancel := context.WithDeadlineCause(ctx, deadline, errWaitOver)
	defer cancel()
	start := time.Now()
	res, err := pin.Do(rctx, req)
	pin.Unpin()
	if err = ownDeadline(ctx, rctx, err); errors.Is(err, wire.ErrTimeout) {
		if err = silence(ctx, p, time.Since(start)); errors.Is(err, pool.ErrNoReply) {
			err = l.describe(err, "")
		}
	}
	g, err := l.grantFrom(ctx, p.Addr(), res, err, confirm)
	if m := l.c.metrics; g != nil && !m.off {
		m.queued.Record(ctx, time.Since(start).Seconds(), m.forServer(p.Addr()).plain[l.kindIdx()].rec...)
	}
	return g, err
}

// silence tells a wait that got no answer in waited from a busy key: nil
// (wire.ErrTimeout, "not acquired") if p's server answers a ping within
// pingAfterWait, else an error that names it. A wait is not answered
// until it ends, and only a stalled server does not answer a ping.
func silence(ctx context.Context, p *pool.Pool, waited time.Duration) error {
	switch err := p.PingBy(ctx, time.Now().Add(pingAfterWait)); {
	case err == nil:
		return wire.ErrTimeout
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		// The ping's error as text: it would match the caller's
		// context errors (a deadline exceeded) that the caller never set.
		return fmt.Errorf("%w from %s: no answer to a wait in %v, nor to a ping in %v (%v)", pool.ErrNoReply, p.Addr(), waited.Round(time.Millisecond), pingAfterWait, err)
	}
}

// pingAfterWait is how long silence waits for its ping's answer: less
// than the 50 ms a call may run past its timeout, to leave room for the
// scheduling around it (at 50 ms, waits on a stopped server ended 1-2 ms
// past the bound, every time).
const pingAfterWait = 40 * time.Millisecond

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

// Release releases the lock and stops renewing it. It returns ErrNotHeld
// if the lock is not held, and an error matching ErrLockLost if it was
// lost meanwhile (its lease had run out on the server). It waits for the
// servers' answers until ctx ends or Config.CloseTimeout passes, then
// says which did not answer; the release still goes out.
func (l *Lock) Release(ctx context.Context) error {
	l.op.Lock()
	defer l.op.Unlock()
	ctx, end := l.span(ctx, "dflock.Release")
	err := l.release(ctx)
	end("", err)
	return err
}

func (l *Lock) release(ctx context.Context) error {
	gone, err := l.letGo()
	if gone.h == nil {
		return err
	}
	return gone.release(ctx)
}

// letGo moves a held or lost handle to idle and stops renewing; it
// returns what a held lock held, to give back, else why not (the loss,
// or ErrNotHeld).
func (l *Lock) letGo() (letGone, error) {
	var gone letGone
	var entries []*renewal
	l.mu.Lock()
	st, h, lostErr := l.state, l.h, l.lostErr
	switch st {
	case stateHeld:
		h.mu.Lock()
		gone = letGone{h: h, groups: h.takenLocked()}
		gone.grants, entries = h.endLocked()
		h.mu.Unlock()
		l.moveLocked(stateIdle, change{})
	case stateLost:
		l.moveLocked(stateIdle, change{})
	}
	l.mu.Unlock()
	switch st {
	case stateLost:
		return gone, lostErr
	case stateHeld:
		for _, e := range entries {
			l.c.renewer.remove(e)
		}
		l.c.untrack(l)
		return gone, nil
	}
	return gone, ErrNotHeld
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
	l.moveLocked(stateClosed, change{})
	l.mu.Unlock()
	if err != nil && !errors.Is(err, ErrNotHeld) && !errors.Is(err, ErrLockLost) {
		return err
	}
	return nil
}

// errClosedUnder is why a lock held at Client.Close is no longer held:
// Close released it while its holder may still run.
var errClosedUnder = fmt.Errorf("%w: released by Client.Close", ErrClosed)

// revoke is letGo for Client.Close: a held lock is released under its
// holder, who is told as of a loss (Lost closes, Err says so, WithLock's
// context is cancelled, its Set hears of it), since code may still run
// under it; neither the loss log, the tests' loss hook nor OnLost hears
// of it, and the metrics count a release. It returns what the lock held,
// to give back.
func (l *Lock) revoke() letGone {
	var gone letGone
	var entries []*renewal
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		gone, _ = l.letGo()
		return gone
	}
	h, cancel := l.h, l.cancel
	h.mu.Lock()
	gone = letGone{h: h, groups: h.takenLocked()}
	gone.grants, entries = h.endLocked()
	h.mu.Unlock()
	err := fmt.Errorf("%w: %s: %w", ErrLockLost, l.what(), errClosedUnder)
	l.moveLocked(stateLost, change{err: err})
	l.mu.Unlock()
	for _, e := range entries {
		l.c.renewer.remove(e)
	}
	if l.member != nil {
		l.member.memberLost(l.key, err)
	}
	if cancel != nil {
		cancel(err)
	}
	return gone
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
	// The tests' hook first, so that a test woken by Lost finds the loss
	// reported; it must not call back into l.
	l.c.lossHook(r, err)
	l.moveLocked(stateLost, change{err: err})
	l.mu.Unlock()

	l.c.untrack(l)
	l.c.losses.lost(l.key, server, err)
	if l.member != nil {
		l.member.memberLost(l.key, err)
	}
	if cancel != nil {
		cancel(err)
	}
	if f := l.opt.onLost; f != nil {
		go f(l.key, err)
	}
}
