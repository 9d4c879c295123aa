package lock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dflock-go/dflock/pool"
)

// Set is several locks, or one slot each of several semaphores, taken
// together by LockAll or SemaphoreAll: all of them or none. Its members are
// renewed by the client's scheduler like any lock. The set is lost when
// any member is: Lost closes, Err says which and why, the OnLost option
// runs once, and WithLockAll's context is cancelled with cause
// ErrLockLost. The other members stay held until Release, so that the
// caller, who may still be working under the set, never shares a key it
// still holds. Its members are not handed out: they are released
// together, by Release. A Set's methods are safe for concurrent use.
type Set struct {
	c       *Client
	locks   []*Lock // in key order
	timeout time.Duration
	onLost  func(key string, err error)
	lost    chan struct{}

	mu         sync.Mutex
	state      setState
	restart    bool   // a member was lost while the set was being taken
	restartKey string // which
	lostErr    error
	cancel     context.CancelCauseFunc // WithLockAll's, while fn runs
}

type setState int

const (
	setTaking setState = iota
	setHeld
	setLost
	setReleased
)

// LockAll takes the locks on every key, all of them or none, waiting up
// to the acquire timeout (AcquireTimeout, default 10 s; 0 tries every key
// once) for the whole set. It returns the held set, or a
// *SetTimeoutError, matching ErrTimeout, when the timeout passed first
// (ctx's error when ctx ended first); then nothing is held. LeaseTTL and
// RenewRatio apply to every member; OnLost runs once, for the set.
//
// It cannot deadlock, across servers or clients: every caller takes the
// keys in one order, their byte order (whatever the servers, the strategy
// or a fleet change in progress, so that every client agrees), and never
// waits for a key while it holds a later one. It first tries every key at
// once (one round trip per server, as TryLockMany); then it keeps the
// keys it holds before the first busy one, gives back those after it,
// waits for it in the server's queue, and goes on from there. A member
// lost before the set is complete starts it over. Keys are refused before
// anything is sent if there are none, or one is invalid (see
// wire.CheckKey) or given twice. A key whose queue is full (the server's
// --max-waiters) fails the set at once with ErrMaxWaiters, as Acquire
// does, rather than wait for room.
func (c *Client) LockAll(ctx context.Context, keys []string, opts ...Option) (*Set, error) {
	return c.takeAll(ctx, "dflock.LockAll", keys, 0, opts)
}

// SemaphoreAll is LockAll for one slot of each of several semaphores of
// limit slots each: it cannot deadlock either, as long as every caller
// takes at most one slot of each key. Taking several slots of one
// semaphore at once is what it refuses (a key given twice): two callers
// each holding part of what they need can wait on each other forever.
func (c *Client) SemaphoreAll(ctx context.Context, keys []string, limit int, opts ...Option) (*Set, error) {
	if limit <= 0 {
		return nil, invalid("semaphore limit %d must be positive", limit)
	}
	return c.takeAll(ctx, "dflock.SemaphoreAll", keys, limit, opts)
}

// WithLockAll runs fn while holding the locks on every key (LockAll),
// and releases them all when fn returns, fails or panics. The context fn
// gets is cancelled, with cause ErrLockLost, if any of them is lost. fn's
// error is returned; if the set was lost meanwhile the error also matches
// ErrLockLost, even when fn returned nil.
func (c *Client) WithLockAll(ctx context.Context, keys []string, fn func(ctx context.Context) error, opts ...Option) error {
	return c.withAll(ctx, "WithLockAll", kindLock, len(keys), fn, func(ctx context.Context) (*Set, error) {
		return c.LockAll(ctx, keys, opts...)
	})
}

// WithSemaphoreAll is WithLockAll for one slot of each of several
// semaphores (SemaphoreAll).
func (c *Client) WithSemaphoreAll(ctx context.Context, keys []string, limit int, fn func(ctx context.Context) error, opts ...Option) error {
	return c.withAll(ctx, "WithSemaphoreAll", kindSemaphore, len(keys), fn, func(ctx context.Context) (*Set, error) {
		return c.SemaphoreAll(ctx, keys, limit, opts...)
	})
}

// withAll is WithLockAll and WithSemaphoreAll, called name: fn run under
// the set take takes, of n keys of kind.
func (c *Client) withAll(ctx context.Context, name string, kind, n int, fn func(ctx context.Context) error, take func(context.Context) (*Set, error)) error {
	if fn == nil {
		return invalid("%s of a nil function", name)
	}
	ctx, end := c.span(ctx, "dflock."+name, kind, "", n)
	s, err := take(ctx)
	if err == nil {
		err = runHeld(ctx, s, fn)
	}
	end("", err)
	return err
}

// Keys returns the set's keys, in the order they are taken.
func (s *Set) Keys() []string {
	keys := make([]string, len(s.locks))
	for i, l := range s.locks {
		keys[i] = l.key
	}
	return keys
}

// Token returns the token of key's member, or "" if key is not in the
// set or not held (see Lock.Token).
func (s *Set) Token(key string) string {
	i, ok := slices.BinarySearchFunc(s.locks, key, func(l *Lock, k string) int { return strings.Compare(l.key, k) })
	if !ok {
		return ""
	}
	return s.locks[i].Token()
}

// Lost returns a channel that is closed when the set, held, is lost:
// when any member is.
func (s *Set) Lost() <-chan struct{} { return s.lost }

// Err returns why the set was lost once Lost is closed (the lost
// member's error, matching ErrLockLost, which names its key), and nil
// otherwise.
func (s *Set) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lostErr
}

// Release releases every member, the releases of one connection in one
// write. It returns the loss (matching ErrLockLost) if the set was lost,
// after releasing the members still held; a *KeysError if some member
// could not be released; ErrNotHeld when called again. If ctx ends
// before the answers, the releases still go out, and the error says the
// answers were not awaited.
func (s *Set) Release(ctx context.Context) error {
	s.mu.Lock()
	st, lostErr := s.state, s.lostErr
	s.state = setReleased
	s.mu.Unlock()
	if st == setReleased {
		return ErrNotHeld
	}
	ctx, end := s.c.span(ctx, "dflock.Set.Release", s.locks[0].kindIdx(), "", len(s.locks))
	err := keysError(s.Keys(), s.c.releaseMany(ctx, s.locks))
	if st == setLost {
		err = lostErr
	}
	end("", err)
	return err
}

// takeAll is LockAll and SemaphoreAll, named name for the span: a set of
// limit's kind over keys, taken.
func (c *Client) takeAll(ctx context.Context, name string, keys []string, limit int, opts []Option) (*Set, error) {
	if len(keys) == 0 {
		return nil, invalid("no keys to take")
	}
	ls, err := c.handles(ctx, keys, limit, opts)
	if err != nil {
		return nil, err
	}
	// The order every client takes a set's keys in: their bytes.
	slices.SortFunc(ls, func(a, b *Lock) int { return strings.Compare(a.key, b.key) })
	s := &Set{c: c, locks: ls, timeout: ls[0].opt.acquireTimeout, onLost: ls[0].opt.onLost, lost: make(chan struct{})}
	for _, l := range ls {
		// The set reports its members' losses, once.
		l.opt.onLost, l.member = nil, s
	}
	ctx, end := c.span(ctx, name, ls[0].kindIdx(), "", len(ls))
	err = s.take(ctx)
	if errors.Is(err, ErrTimeout) {
		end(outcomes[outcomeIdxTimeout], err)
	} else {
		end(acquiredOutcome(ctx, err == nil, err), err)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// SetTimeoutError is the error of LockAll (SemaphoreAll, WithLockAll...)
// when the acquire timeout passed before every key was taken: it matches
// ErrTimeout and names the key the set was waiting for.
type SetTimeoutError struct {
	Keys    int           // how many keys the set has
	Timeout time.Duration // the acquire timeout
	Busy    string        // the key it could not take
}

func (e *SetTimeoutError) Error() string {
	if e.Timeout <= 0 {
		return fmt.Sprintf("lock: %d keys not all free (%q was taken; an acquire timeout of 0 tries once)", e.Keys, e.Busy)
	}
	return fmt.Sprintf("lock: %d keys not all taken within %v (%q was busy)", e.Keys, e.Timeout, e.Busy)
}

// Unwrap returns ErrTimeout.
func (e *SetTimeoutError) Unwrap() error { return ErrTimeout }

// take takes every member, in key order, by the set's deadline; on
// failure it gives back whatever it took.
func (s *Set) take(ctx context.Context) error {
	deadline := time.Now().Add(s.timeout)
	held := make([]bool, len(s.locks))
	for {
		busy, err := s.round(ctx, deadline, held)
		if err == nil && busy < 0 && s.settle() {
			return nil
		}
		// Failed, or a member was lost on the way: nothing is kept.
		s.giveBack(ctx, deadline, held, 0)
		switch {
		case errors.Is(err, ErrTimeout), err == nil && busy >= 0:
			return &SetTimeoutError{Keys: len(s.locks), Timeout: s.timeout, Busy: s.locks[busy].key}
		case err != nil:
			return err
		}
		s.mu.Lock()
		lostKey := s.restartKey
		s.restart, s.restartKey = false, ""
		s.mu.Unlock()
		if !time.Now().Before(deadline) {
			// Members keep being lost (a server that drops what it
			// grants): the deadline ends the retries too.
			return &SetTimeoutError{Keys: len(s.locks), Timeout: s.timeout, Busy: lostKey}
		}
	}
}

// round is one pass of take: it tries every member not held at once,
// then, while some are busy, gives back those after the first busy one,
// waits for it until deadline, and tries the rest. It returns -1 when
// every member is held (unless one was lost meanwhile, which settle
// checks), else the index of the member it could not take and why (nil,
// or ErrTimeout, for the deadline).
func (s *Set) round(ctx context.Context, deadline time.Time, held []bool) (int, error) {
	from := 0
	for {
		var rest []*Lock
		for i := from; i < len(s.locks); i++ {
			if !held[i] {
				rest = append(rest, s.locks[i])
			}
		}
		answerBy := deadline
		if s.timeout <= 0 {
			answerBy = time.Time{} // tried once: answered as a try-lock is
		}
		outs := s.c.tryMany(ctx, rest, answerBy)
		failed, ferr := -1, error(nil)
		j := 0
		for i := from; i < len(s.locks); i++ {
			if held[i] {
				continue
			}
			held[i] = outs[j].ok
			if err := outs[j].err; err != nil && ferr == nil {
				failed, ferr = i, err
			}
			j++
		}
		if ferr != nil {
			return failed, ferr
		}
		k := slices.Index(held, false)
		if k < 0 {
			return -1, nil
		}
		// Never wait for a key while holding a later one: that is what
		// makes two sets taken in the same order unable to wait on each
		// other.
		if !time.Now().Before(deadline) {
			return k, nil // AcquireTimeout(0): tried once
		}
		s.giveBack(ctx, deadline, held, k+1)
		l := s.locks[k]
		l.holdsOthers.Store(slices.Contains(held, true))
		ok, err := s.wait(ctx, l, deadline)
		from = k + 1
		if errors.Is(err, pool.ErrNoFreeConn) {
			// Every connection that can carry a wait is taken, maybe by
			// waits for keys this set holds: the set must not wait for
			// one while it holds them, or the two wait on each other. It
			// gives them back and waits holding nothing.
			s.giveBack(ctx, deadline, held, 0)
			l.holdsOthers.Store(false)
			ok, err = s.wait(ctx, l, deadline)
			from = 0
		}
		if err != nil || !ok {
			return k, err
		}
		held[k] = true
		s.mu.Lock()
		restart := s.restart
		s.mu.Unlock()
		if restart {
			return -1, nil
		}
	}
}

// wait takes member l, waiting for it until deadline: the client gives
// up then, whatever the server was told (whole seconds, rounded up).
func (s *Set) wait(ctx context.Context, l *Lock, deadline time.Time) (bool, error) {
	wctx, cancel := context.WithDeadlineCause(ctx, deadline, errWaitOver)
	defer cancel()
	ok, err := l.acquire(wctx, time.Until(deadline))
	return ok, ownDeadline(ctx, wctx, err)
}

// settle makes the set held if every member still is; false if one was
// lost while the set was being taken.
func (s *Set) settle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.restart {
		return false
	}
	for _, l := range s.locks {
		l.mu.Lock()
		st := l.state
		l.mu.Unlock()
		if st != stateHeld {
			return false
		}
	}
	s.state = setHeld
	return true
}

// giveBack releases the members held from index from on, in one write
// per connection, and marks them not held; it returns by deadline (or
// minAnswerWait from now, if later). A member lost meanwhile goes back to
// idle with them.
func (s *Set) giveBack(ctx context.Context, deadline time.Time, held []bool, from int) {
	var ls []*Lock
	for i := from; i < len(held); i++ {
		if held[i] {
			ls = append(ls, s.locks[i])
			held[i] = false
		}
	}
	if len(ls) == 0 {
		return
	}
	// The releases go out at once, and their answers are awaited, so
	// that a set that failed has let go on the servers when it returns;
	// but not past the set's deadline (the call's bound), or past now
	// once ctx ended: a stalled server must not hold up the caller (a
	// release is sent whether or not its answer is awaited).
	bound := time.Now().Add(minAnswerWait)
	if ctx.Err() == nil && deadline.After(bound) {
		bound = deadline
	}
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), bound)
	defer cancel()
	for i, err := range s.c.releaseMany(rctx, ls) {
		if err != nil && !errors.Is(err, ErrLockLost) && !errors.Is(err, ErrNotHeld) && rctx.Err() == nil {
			s.c.log.Debug("lock: giving back a key of a set", "key", ls[i].key, "err", err)
		}
	}
}

// memberLost is told by a member that it was lost with err.
func (s *Set) memberLost(key string, err error) {
	s.mu.Lock()
	switch s.state {
	case setTaking:
		s.restart, s.restartKey = true, key
		s.mu.Unlock()
		return
	case setHeld:
	default:
		s.mu.Unlock()
		return
	}
	s.state, s.lostErr = setLost, err
	close(s.lost)
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel(err)
	}
	if f := s.onLost; f != nil && !errors.Is(err, errClosedUnder) {
		go f(key, err)
	}
}

// holding is something held that fn runs under (a Lock, a Set): runHeld
// tells it the cancel of fn's context, asks it for its loss, and closes
// it.
type holding interface {
	// watch makes cancel (nil: none) what a loss calls; it reports
	// whether the thing is already lost.
	watch(cancel context.CancelCauseFunc) (lost bool)
	// lossErr is why it was lost, or nil.
	lossErr() error
	// finish releases it, logging what went wrong.
	finish()
}

// runHeld runs fn under h, which is held: fn's context is cancelled with
// cause ErrLockLost when h is lost, h is released when fn returns or
// panics, and a loss is returned with fn's error even if fn ignored it.
func runHeld(ctx context.Context, h holding, fn func(ctx context.Context) error) error {
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if h.watch(cancel) {
		// Lost between taking it and here.
		cancel(cmp.Or(h.lossErr(), ErrLockLost))
	}
	defer func() {
		// Also when fn panics.
		h.watch(nil)
		h.finish()
	}()
	err := fn(fctx)
	if lostErr := h.lossErr(); lostErr != nil && !errors.Is(err, ErrLockLost) {
		// fn may not have looked at its context: the loss must not go
		// unnoticed.
		return errors.Join(err, lostErr)
	}
	return err
}

func (s *Set) watch(cancel context.CancelCauseFunc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel = cancel
	return s.state == setLost
}

func (s *Set) lossErr() error { return s.Err() }

func (s *Set) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), s.c.closeTimeout)
	defer cancel()
	if err := s.Release(ctx); err != nil && !errors.Is(err, ErrLockLost) {
		s.c.log.Warn("lock: release after WithLockAll", "keys", keyList(s.Keys()), "err", err)
	}
}
