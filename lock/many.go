package lock

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// TryLockMany tries to take every key at once, as TryAcquire would each,
// and returns the handles it took (held, in the order of keys: renewed
// in the background until released) and the keys it found busy. The keys
// of one server go out together, in one write, so that many keys cost
// about one round trip; so does the first round of try-locks of a
// replicated key (Config.Replicas), or of one that moves in a fleet
// change, which is then judged as TryAcquire judges it.
//
// An invalid key (see wire.CheckKey), a key given twice, or a bad option
// fail the whole call before anything is sent, and no keys at all take
// nothing. Otherwise err is nil when every key is in held or busy (both
// in the order of keys), and a *KeysError for the keys that are in
// neither (their server could not be reached, say); the handles in held
// are held either way, and are the caller's to release
// (Client.ReleaseMany gives many back at once, in one write per server).
// A server that does not answer within Config.ReplicaTimeout (stalled)
// has its keys in the error too, matching pool.ErrNoReply (a grant it sends later is released
// at once); a replicated key is in it when too few of its replicas
// answered to make a quorum. LeaseTTL, RenewRatio and OnLost apply to
// each handle; AcquireTimeout does not: nothing waits.
func (c *Client) TryLockMany(ctx context.Context, keys []string, opts ...Option) (held []*Lock, busy []string, err error) {
	return c.tryKeys(ctx, "dflock.TryLockMany", keys, 0, opts)
}

// TrySemaphoreMany is TryLockMany for one slot of each of several
// semaphores of limit slots each. To release them together, give their
// Lock fields to ReleaseMany.
func (c *Client) TrySemaphoreMany(ctx context.Context, keys []string, limit int, opts ...Option) (held []*Semaphore, busy []string, err error) {
	if limit <= 0 {
		return nil, nil, invalid("semaphore limit %d must be positive", limit)
	}
	got, busy, err := c.tryKeys(ctx, "dflock.TrySemaphoreMany", keys, limit, opts)
	for _, l := range got {
		held = append(held, &Semaphore{l})
	}
	return held, busy, err
}

// tryKeys is TryLockMany and TrySemaphoreMany, named name for the span:
// handles of limit's kind over keys, tried.
func (c *Client) tryKeys(ctx context.Context, name string, keys []string, limit int, opts []Option) ([]*Lock, []string, error) {
	ls, err := c.handles(ctx, keys, limit, opts)
	if err != nil {
		return nil, nil, err
	}
	kind := kindLock
	if limit > 0 {
		kind = kindSemaphore
	}
	ctx, end := c.span(ctx, name, kind, "", len(ls))
	held, busy, err := sortOut(ls, c.tryMany(ctx, ls, time.Time{}))
	end("", err)
	return held, busy, err
}

// ReleaseMany releases the locks, as Release does each, but together:
// the releases of one connection go out in one write. It returns nil when
// every one was released, and otherwise a *KeysError with each failure:
// ErrNotHeld for a lock not held, an error matching ErrLockLost for one
// lost meanwhile, ErrInvalid for a nil handle (the others are still
// released). The handles stay usable. Pass a Semaphore's Lock field to
// release a slot.
func (c *Client) ReleaseMany(ctx context.Context, locks ...*Lock) error {
	if ctx == nil {
		return invalid("nil context")
	}
	// A nil handle is a failure of its own, in the *KeysError with the
	// others; the rest are still released.
	var keys []string
	var errs []error
	if slices.Contains(locks, nil) {
		locks = slices.DeleteFunc(slices.Clone(locks), func(l *Lock) bool { return l == nil })
		keys, errs = append(keys, ""), append(errs, invalid("ReleaseMany of a nil handle"))
	}
	if len(locks) > 0 {
		ctx, end := c.span(ctx, "dflock.ReleaseMany", locks[0].kindIdx(), "", len(locks))
		for _, l := range locks {
			keys = append(keys, l.key)
		}
		errs = append(errs, c.releaseMany(ctx, locks)...)
		end("", keysError(keys[len(keys)-len(locks):], errs[len(errs)-len(locks):]))
	}
	return keysError(keys, errs)
}

// KeysError is the error of a call on many keys (TryLockMany,
// ReleaseMany) for the keys it could not settle: Errs[i] is why Keys[i]
// failed. errors.Is and errors.As look through every one of them.
type KeysError struct {
	// Keys are the keys that failed, Errs why, in the same order.
	Keys []string
	Errs []error
}

func (e *KeysError) Error() string {
	if len(e.Errs) == 1 {
		return e.Errs[0].Error()
	}
	return fmt.Sprintf("lock: %d keys failed; the first: %v", len(e.Errs), e.Errs[0])
}

// Unwrap returns every key's error.
func (e *KeysError) Unwrap() []error { return e.Errs }

// keysError gathers the errors of a call on keys (errs[i] for keys[i],
// nil for success) into a *KeysError, or nil when there are none.
func keysError(keys []string, errs []error) error {
	var e *KeysError
	for i, err := range errs {
		if err == nil {
			continue
		}
		if e == nil {
			e = &KeysError{}
		}
		e.Keys = append(e.Keys, keys[i])
		e.Errs = append(e.Errs, err)
	}
	if e == nil {
		return nil
	}
	return e
}

// handles makes a handle for each key (of a semaphore of limit slots, or
// locks when limit is 0), refusing a nil ctx, a bad key or option, or a
// key given twice, before anything is sent.
func (c *Client) handles(ctx context.Context, keys []string, limit int, opts []Option) ([]*Lock, error) {
	if ctx == nil {
		return nil, invalid("nil context")
	}
	ls := make([]*Lock, len(keys))
	seen := make(map[string]struct{}, len(keys))
	for i, k := range keys {
		l := newLock(c, k, limit, opts)
		if l.err != nil {
			return nil, l.err
		}
		if _, dup := seen[k]; dup {
			return nil, invalid("key %q is given twice", k)
		}
		seen[k] = struct{}{}
		ls[i] = l
	}
	return ls, nil
}

// keyOutcome is how the try-lock of one key of many ended: taken (ok),
// busy (neither), or err.
type keyOutcome struct {
	ok  bool
	err error
}

// sortOut splits the outcomes of tryMany over ls into the handles taken,
// the keys found busy, and the errors of the rest.
func sortOut(ls []*Lock, outs []keyOutcome) (held []*Lock, busy []string, err error) {
	var keys []string
	var errs []error
	for i, o := range outs {
		switch {
		case o.err != nil:
			keys, errs = append(keys, ls[i].key), append(errs, o.err)
		case o.ok:
			held = append(held, ls[i])
		default:
			busy = append(busy, ls[i].key)
		}
	}
	return held, busy, keysError(keys, errs)
}

// manyWorkers bounds the keys of one call that move in a fleet change
// and are settled at once (see tryMany).
const manyWorkers = 64

// keyTry is one key of tryMany: its handle's index, its holder, and the
// answers of its first round.
type keyTry struct {
	i    int
	h    *holder
	outs []tryOutcome
}

// tryMany tries to take every handle of ls, as TryAcquire does each.
// The first round of every key, a try-lock to each of its servers, goes
// out together, in one write per server; the answers decide most keys
// at once (takeView). A key that moves in a fleet change may take a
// round of its own for its second route. Outcome i is ls[i]'s. The
// answers are awaited until deadline (a set's), or, when it is zero, as
// a try-lock's (see answerWait).
func (c *Client) tryMany(ctx context.Context, ls []*Lock, deadline time.Time) []keyOutcome {
	start := time.Now()
	outs := make([]keyOutcome, len(ls))
	rt := c.route.Load()
	tries := c.firstRound(ctx, rt, ls, start, deadline, outs)
	var moving []*keyTry
	for _, kt := range tries {
		if len(kt.h.groups) > 1 {
			moving = append(moving, kt)
			continue
		}
		// Decided by the answers in, with no request of its own.
		outs[kt.i] = c.settleTry(ctx, rt, kt, start)
	}
	work := make(chan *keyTry)
	var wg sync.WaitGroup
	for range min(len(moving), manyWorkers) {
		wg.Go(func() {
			for kt := range work {
				outs[kt.i] = c.settleTry(ctx, rt, kt, start)
			}
		})
	}
	for _, kt := range moving {
		work <- kt
	}
	close(work)
	wg.Wait()
	return outs
}

// firstRound places each handle of ls under rt and sends the try-locks
// of every key to every one of its servers, those of one server in one
// write, and waits for the answers (or the answer deadline). The
// handles it returns stay locked (op) until settleTry; those that failed
// before sending have their outcome in outs.
func (c *Client) firstRound(ctx context.Context, rt *routing, ls []*Lock, start, deadline time.Time, outs []keyOutcome) []*keyTry {
	type sent struct {
		kt *keyTry
		p  probe
	}
	byPool := map[*pool.Pool][]sent{}
	tries := make([]*keyTry, 0, len(ls))
	for i, l := range ls {
		l.op.Lock()
		err := l.ready()
		var h *holder
		if err == nil {
			h, err = l.holderFor(rt)
		}
		if err != nil {
			l.acquireDone(ctx, "", start, false, err)
			l.op.Unlock()
			outs[i].err = err
			continue
		}
		h.deadline, h.tryOnly = deadline, deadline.IsZero()
		kt := &keyTry{i: i, h: h, outs: make([]tryOutcome, len(h.slots))}
		all := onlyFirst
		if len(h.slots) > 1 {
			all = allReplicas(len(h.slots))
		}
		for _, p := range h.toSend(all, kt.outs, nil) {
			byPool[h.slots[p.i].pool] = append(byPool[h.slots[p.i].pool], sent{kt, p})
		}
		tries = append(tries, kt)
	}
	var wg sync.WaitGroup
	for p, ss := range byPool {
		wg.Go(func() {
			reqs := make([]wire.Request, len(ss))
			for j, x := range ss {
				reqs[j] = x.kt.h.l.request(x.kt.h.l.cmds.Acquire)
			}
			// Every holder of a client waits alike: all replicated, or
			// all on one server per group.
			res, errs := p.DoAllBy(ctx, reqs, time.Now().Add(ss[0].kt.h.answerWait()))
			for j, x := range ss {
				o := x.kt.h.tried(ctx, x.p.i, res[j], errs[j])
				x.kt.h.noteAnswer(ctx, x.p, o)
				x.kt.outs[x.p.i] = o
			}
		})
	}
	wg.Wait()
	return tries
}

// settleTry decides kt's key on its first round's answers, as
// TryAcquire would, and unlocks its handle.
func (c *Client) settleTry(ctx context.Context, rt *routing, kt *keyTry, start time.Time) keyOutcome {
	h, l := kt.h, kt.h.l
	ok, err := h.takeGroups(ctx, 0, start, kt.outs)
	if ok && err == nil {
		ok, err = l.adopt(h)
	}
	ok, err = l.settle(ctx, rt, start, ok, err)
	l.acquireDone(ctx, h.addr(0), start, ok, err)
	l.op.Unlock()
	return keyOutcome{ok, err}
}

// releaseMany releases every handle of ls as Release does, the grants of
// one connection in one write; error i is ls[i]'s.
func (c *Client) releaseMany(ctx context.Context, ls []*Lock) []error {
	errs := make([]error, len(ls))
	var grants []*pool.Grant
	var of []int // grants[j] is ls[of[j]]'s
	var wg sync.WaitGroup
	for i, l := range ls {
		// One handle's op at a time: two calls on overlapping handles
		// must not wait on each other.
		l.op.Lock()
		gone, err := l.letGo()
		l.op.Unlock()
		switch {
		case gone.h != nil && len(gone.h.slots) == 1 && len(gone.grants) == 1:
			grants, of = append(grants, gone.grants[0]), append(of, i)
		case gone.h != nil:
			// Replicated, or moving: a round of its own, over its
			// servers, as Release does.
			wg.Go(func() { errs[i] = gone.release(ctx) })
		default:
			errs[i] = err
		}
	}
	for j, err := range pool.ReleaseEach(ctx, grants) {
		errs[of[j]] = releaseError(err)
	}
	wg.Wait()
	return errs
}

// keyList names keys for a message, the first few of them.
func keyList(keys []string) string {
	const most = 5
	if len(keys) <= most {
		return fmt.Sprintf("%q", keys)
	}
	return fmt.Sprintf("%q and %d more", keys[:most], len(keys)-most)
}
