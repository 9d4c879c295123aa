package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	if r.h == nil {
		return nil // nothing was held
	}
	deadline := time.Now().Add(r.h.l.c.closeTimeout)
	if len(r.grants) == 1 && len(r.h.slots) == 1 {
		// One server: its answer is the release's.
		rel := r.grants[0].StartRelease()
		return releaseError(rel.Await(ctx, deadline))
	}
	var buf [viewBufLen]pool.Releasing
	rs := startReleases(r.grants, buf[:0])
	return r.judge(ctx, rs, deadline)
}

// releaseError is what Release reports for the error of a grant's
// release.
func releaseError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pool.ErrClosed):
		// Client.Close closed the connections under the release, which
		// released the lock (or will, at its lease's end): not a loss.
		return fmt.Errorf("%w: released by Client.Close: %w", ErrClosed, err)
	case errors.Is(err, pool.ErrGrantLost):
		return fmt.Errorf("%w: %w", ErrLockLost, err)
	}
	return fmt.Errorf("lock: %w", err)
}

// startReleases sends the releases of gs at once, appended to rs: no
// goroutine each; their answers are awaited.
func startReleases(gs []*pool.Grant, rs []pool.Releasing) []pool.Releasing {
	for _, g := range gs {
		rs = append(rs, g.StartRelease())
	}
	return rs
}

// releasesLeft has the client take in, in the background, the answers to
// releases whose caller stopped listening (its ctx ended, say), by
// deadline: a release whose connection breaks meanwhile goes out again
// on another (see pool.Grant.Release).
func (c *Client) releasesLeft(ctx context.Context, rs []pool.Releasing, deadline time.Time) {
	if len(rs) == 0 {
		return
	}
	rest := slices.Clone(rs)
	ctx = context.WithoutCancel(ctx)
	awaitAll := func() {
		for i := range rest {
			rest[i].Await(ctx, deadline)
		}
	}
	if !c.tasks.goFn(awaitAll) {
		awaitAll() // closing: the pools fail them at once
	}
}

// releaseTally is what judge knows of the releases of r's grants, by
// server (held: a grant was released there; released: the server said
// so; gone: the server had let it go), and by grant.
type releaseTally struct {
	held, released, gone []bool
	at                   []int // grant j's server
	errs                 []error
	answered             []bool
}

// take records the answer err to the release of grant j.
func (t *releaseTally) take(j int, err error) {
	t.errs[j], t.answered[j] = err, true
	switch {
	case err == nil:
		t.released[t.at[j]] = true
	case errors.Is(err, pool.ErrGrantLost):
		t.gone[t.at[j]] = true
	}
}

// judge reads the answers to the releases rs of r's grants, sent at once,
// each awaited until deadline: nil once they make a quorum of every
// group (and the others are in, or a while has passed), or why not.
func (r letGone) judge(ctx context.Context, rs []pool.Releasing, deadline time.Time) error {
	h, l := r.h, r.h.l
	n, m := len(h.slots), len(r.grants)
	t := releaseTally{
		held: make([]bool, n), released: make([]bool, n), gone: make([]bool, n),
		at: make([]int, m), errs: make([]error, m), answered: make([]bool, m),
	}
	for j, g := range r.grants {
		t.at[j] = h.index(g.Addr())
		t.held[t.at[j]] = true
	}
	var ended bool
	if oneEach(r.groups) {
		// Every answer is needed: in turn.
		ended = r.awaitInTurn(ctx, rs, deadline, &t)
	} else {
		ended = r.awaitAsTheyCome(ctx, rs, deadline, &t)
	}
	if ended {
		if k := quorateOn(r.groups, t.released); k >= 0 {
			return fmt.Errorf("lock: %s: released on %s when ctx ended (the rest are still sent): %w", l.what(), tally(r.groups[k], t.released), ctx.Err())
		}
		return nil
	}
	return r.verdict(&t)
}

// oneEach reports whether every group is one server.
func oneEach(groups []replicaGroup) bool {
	for _, g := range groups {
		if len(g.idx) != 1 {
			return false
		}
	}
	return true
}

// awaitInTurn takes the answers to rs in turn into t. ended says ctx
// ended first: the answers left are taken in the background.
func (r letGone) awaitInTurn(ctx context.Context, rs []pool.Releasing, deadline time.Time, t *releaseTally) (ended bool) {
	for j := range rs {
		if rs[j].Wait(ctx, deadline) != nil && ctx.Err() != nil {
			r.h.l.c.releasesLeft(ctx, rs[j:], deadline)
			return true
		}
		t.take(j, rs[j].Await(ctx, deadline))
	}
	return false
}

// awaitAsTheyCome takes the answers to rs into t as they come. Past a
// quorum of every group, the other answers are still awaited a while: a
// release that returns before they are in would have the next acquire
// of the key, from this client say, find those replicas still taken. A
// stalled server is not waited for past the replica timeout, nor at all
// once known to be slow. ended says ctx ended first. The answers not
// taken are taken in the background.
func (r letGone) awaitAsTheyCome(ctx context.Context, rs []pool.Releasing, deadline time.Time, t *releaseTally) (ended bool) {
	l := r.h.l
	in := make(chan int, len(rs))
	for j := range rs {
		rs[j].Notify(in, j)
	}
	defer func() {
		var rest []pool.Releasing
		for j := range rs {
			if !t.answered[j] {
				rest = append(rest, rs[j])
			}
		}
		l.c.releasesLeft(ctx, rest, deadline)
	}()
	late := time.NewTimer(ahead(time.Until(deadline)))
	defer late.Stop()
	var linger <-chan time.Time
	for range rs {
		select {
		case j := <-in:
			t.take(j, rs[j].Await(ctx, deadline))
		case <-late.C:
			// Unanswered by the deadline: each says so at once.
			for j := range rs {
				if !t.answered[j] {
					t.take(j, rs[j].Await(ctx, deadline))
				}
			}
			return false
		case <-linger:
			for j, g := range r.grants {
				// An answer on its way in this process is not a slow
				// server's: ours was (starved of CPU).
				if !t.answered[j] && !rs[j].Arriving() {
					l.c.slow.saw(g.Addr())
				}
			}
			return false
		case <-ctx.Done():
			return true
		}
		if linger == nil && quorateOn(r.groups, t.released) < 0 {
			if r.slowLeft(t.answered) {
				break
			}
			lt := time.NewTimer(l.c.replicaTimeout)
			defer lt.Stop()
			linger = lt.C
		}
	}
	return false
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

// verdict is the release's outcome once every answer is in (see
// releaseTally).
func (r letGone) verdict(t *releaseTally) error {
	l := r.h.l
	if quorateOn(r.groups, t.released) < 0 {
		return nil
	}
	still := make([]bool, len(t.held))
	for i := range still {
		still[i] = t.held[i] && !t.gone[i]
	}
	if k := quorateOn(r.groups, still); k >= 0 {
		if len(r.h.slots) == 1 {
			return releaseError(t.errs[0])
		}
		return fmt.Errorf("%w: %s: the servers held it on only %s: %w", ErrLockLost, l.what(), tally(r.groups[k], still), errors.Join(t.errs...))
	}
	k := quorateOn(r.groups, t.released)
	return fmt.Errorf("lock: %s: released on %s; the others did not answer: %w", l.what(), tally(r.groups[k], t.released), errors.Join(t.errs...))
}

// quorateOn is quorate of the servers marked in in (by server).
func quorateOn(groups []replicaGroup, in []bool) int {
	return quorate(groups, func(i int) bool { return in[i] })
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
	ctx = context.WithoutCancel(ctx)
	deadline := time.Now().Add(l.c.closeTimeout)
	rs := startReleases(gs, nil)
	for j := range rs {
		if err := rs[j].Await(ctx, deadline); err != nil {
			l.c.log.Debug("lock: giving back a lock's old servers after a fleet change", "key", l.key, "server", gs[j].Addr(), "err", err)
		}
	}
}
