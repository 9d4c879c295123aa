package lock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/pool"
)

// letGone is what letGo took out of a held holder: its grants, to give
// back, and its groups as they were, to judge the releases by.
type letGone struct {
	h      *holder
	groups []replicaGroup
	grants []*pool.Grant
}

// release gives back the grants a released lock held, all at once. It
// succeeds when they held a quorum of every group; it reports the lock
// lost when the servers had let go of too many to leave one.
func (r letGone) release(ctx context.Context) error {
	switch {
	case r.h == nil:
		return nil // nothing was held
	case len(r.grants) == 1 && len(r.h.slots) == 1:
		// One server: its answer is the release's, in the caller's
		// goroutine.
		return releaseError(r.grants[0].Release(ctx))
	}
	answers := r.h.l.c.releaseAll(ctx, r.grants)
	return r.judge(ctx, answers)
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

// releaseAnswer is the answer to the release of grant i of many.
type releaseAnswer struct {
	i   int
	err error
}

// releaseAll sends the releases of gs at once, one goroutine each, owned
// by the client; their answers come on the channel returned (which has
// room for all of them). The releases go on after the caller stops
// listening, bounded by the close timeout: a stalled server must not
// keep a goroutine for ever.
func (c *Client) releaseAll(ctx context.Context, gs []*pool.Grant) <-chan releaseAnswer {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.closeTimeout)
	ch := make(chan releaseAnswer, len(gs))
	var left atomic.Int32
	left.Store(int32(len(gs)))
	send := func(i int, g *pool.Grant) {
		ch <- releaseAnswer{i, g.Release(rctx)}
		if left.Add(-1) == 0 {
			cancel()
		}
	}
	for i, g := range gs {
		if !c.tasks.goFn(func() { send(i, g) }) {
			// Closing: released in line.
			send(i, g)
		}
	}
	return ch
}

// judge reads the answers to the releases of r's grants: nil once they
// make a quorum of every group (and the others are in, or a while has
// passed), or why not.
func (r letGone) judge(ctx context.Context, answers <-chan releaseAnswer) error {
	h, l := r.h, r.h.l
	// By server: held, released, gone (the server had let it go).
	n := len(h.slots)
	held, released, gone := make([]bool, n), make([]bool, n), make([]bool, n)
	at := make([]int, len(r.grants))
	for j, g := range r.grants {
		at[j] = h.index(g.Addr())
		held[at[j]] = true
	}
	isReleased := func(i int) bool { return released[i] }
	errs := make([]error, len(r.grants))
	answered := make([]bool, len(r.grants))
	// Past a quorum, the other answers are still awaited a while: a
	// release that returns before they are in would have the next acquire
	// of the key, from this client say, find those replicas still taken.
	// A stalled server is not waited for past the replica timeout, nor
	// at all once known to be slow.
	var linger <-chan time.Time
	for range r.grants {
		var a releaseAnswer
		select {
		case a = <-answers:
		case <-linger:
			for i, g := range r.grants {
				if !answered[i] {
					l.c.slow.saw(g.Addr())
				}
			}
			return nil
		case <-ctx.Done():
			if k := quorate(r.groups, isReleased); k >= 0 {
				return fmt.Errorf("lock: %s: released on %s when ctx ended (the rest are still sent): %w", l.what(), tally(r.groups[k], released), ctx.Err())
			}
			return nil
		}
		errs[a.i], answered[a.i] = a.err, true
		switch {
		case a.err == nil:
			released[at[a.i]] = true
		case errors.Is(a.err, pool.ErrGrantLost):
			gone[at[a.i]] = true
		}
		if linger == nil && quorate(r.groups, isReleased) < 0 {
			if r.slowLeft(answered) {
				break
			}
			t := time.NewTimer(l.c.replicaTimeout)
			defer t.Stop()
			linger = t.C
		}
	}
	return r.verdict(held, released, gone, errs)
}

// slowLeft reports whether every release not answered yet went to a
// server known to be slow: not worth waiting for.
func (r letGone) slowLeft(answered []bool) bool {
	for i, g := range r.grants {
		if !answered[i] && !r.h.l.c.slow.recent(g.Addr()) {
			return false
		}
	}
	return true
}

// verdict is the release's outcome once every answer is in, by server:
// held (a grant was released there), released (the server said so),
// gone (the server had let it go), and the errors.
func (r letGone) verdict(held, released, gone []bool, errs []error) error {
	l := r.h.l
	if quorate(r.groups, func(i int) bool { return released[i] }) < 0 {
		return nil
	}
	still := make([]bool, len(held))
	for i := range still {
		still[i] = held[i] && !gone[i]
	}
	if k := quorate(r.groups, func(i int) bool { return still[i] }); k >= 0 {
		if len(r.h.slots) == 1 {
			return releaseError(errs[0])
		}
		return fmt.Errorf("%w: %s: the servers held it on only %s: %w", ErrLockLost, l.what(), tally(r.groups[k], still), errors.Join(errs...))
	}
	k := quorate(r.groups, func(i int) bool { return released[i] })
	return fmt.Errorf("lock: %s: released on %s; the others did not answer: %w", l.what(), tally(r.groups[k], released), errors.Join(errs...))
}

// tally says how many of group g's replicas are in (by server), against
// its quorum.
func tally(g replicaGroup, in []bool) string {
	return fmt.Sprintf("%d of %d replicas, quorum %d", countIn(g, func(i int) bool { return in[i] }), len(g.idx), g.quorum)
}

// giveBack releases grants a held lock no longer needs, all at once,
// waiting for the answers (bounded by the close timeout).
func (l *Lock) giveBack(ctx context.Context, gs []*pool.Grant) {
	if len(gs) == 0 {
		return
	}
	answers := l.c.releaseAll(ctx, gs)
	for range gs {
		if a := <-answers; a.err != nil {
			l.c.log.Debug("lock: giving back a lock's old servers after a fleet change", "key", l.key, "server", gs[a.i].Addr(), "err", a.err)
		}
	}
}
