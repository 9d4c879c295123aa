package lock_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/lock"
)

// history records, for every key, when each holder held it from the
// client's point of view: from Acquire returning true until the holder
// stopped claiming it (its Release began, or the client declared the
// lock lost). Two claims of a lock that overlap, or more claims of a
// semaphore than its limit, break mutual exclusion.
//
// In a synctest bubble many events share one virtual instant, so
// time.Now() cannot order them. Claims begun with hold (or begin) are
// ordered logically instead: every event takes the next number of one
// atomic sequence as it happens, and an event that caused another (a
// release, then the grant it let through) took its number first. Their
// times only measure how long an overlap lasted. Claims given to record
// are ordered by their times, for tests on the wall clock; a history
// holds claims of one kind or the other.
type history struct {
	seq       atomic.Uint64
	mu        sync.Mutex
	intervals map[string][]interval
	limits    map[string]int
	// declared holds the losses clients declared (declare), by grant,
	// until the claim they end is finished.
	declared map[grantRef]stamp
	// unseen counts claims lost before their holder saw them; matched,
	// the claims whose end was their loss's declaration.
	unseen, matched int
}

// stamp is a point in a history: seq orders it (0 in a claim given to
// record, ordered by at), at is the clock then.
type stamp struct {
	seq uint64
	at  time.Time
}

// before says whether a came before b: by sequence, or by time for
// claims given to record.
func (a stamp) before(b stamp) bool {
	if a.seq != 0 && b.seq != 0 {
		return a.seq < b.seq
	}
	return a.at.Before(b.at)
}

func (a stamp) String() string {
	if a.seq == 0 {
		return a.at.Format("05.000000")
	}
	return fmt.Sprintf("#%d@%s", a.seq, a.at.Format("04:05.000000"))
}

type interval struct {
	holder     string
	start, end stamp
	lost       bool // the claim ended because the lock was lost
}

// grantRef names one grant: a token of a key on a server.
type grantRef struct{ key, addr, token string }

// violation is a moment a key had more holders than its limit.
type violation struct {
	text string
	// overlap lasts from the newest claim's start until the first of the
	// others ended, on the clock (virtual in a bubble: zero when the
	// overlap took no time); byLoss says that claim ended by loss (the
	// client learned it late) rather than by release.
	overlap time.Duration
	byLoss  bool
}

func newHistory() *history {
	return &history{intervals: map[string][]interval{}, limits: map[string]int{}, declared: map[grantRef]stamp{}}
}

// now takes the next point of the history's logical order.
func (h *history) now() stamp { return stamp{h.seq.Add(1), time.Now()} }

// record adds a claim timed by the wall clock.
func (h *history) record(key string, limit int, holder string, start, end time.Time, lost bool) {
	h.add(key, limit, interval{holder, stamp{at: start}, stamp{at: end}, lost})
}

func (h *history) add(key string, limit int, iv interval) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.intervals[key] = append(h.intervals[key], iv)
	h.limits[key] = max(limit, 1)
}

// declare is a loss hook (see watchLosses): it takes the moment a client
// declares a loss, before the client gives anything back and before the
// holder can learn of it, as the end of the claim on those grants.
func (h *history) declare(r lock.LossReport) {
	at := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range r.Grants {
		h.declared[grantRef{r.Key, g.Addr, g.Token}] = at
	}
}

// claim is a holder's claim, from hold (or begin) until finish.
type claim struct {
	h      *history
	key    string
	limit  int
	holder string
	grants []grantRef
	start  stamp
}

// hold begins holder's claim on l, for which Acquire just returned true;
// limit is the semaphore's, 0 for a lock.
func (h *history) hold(l *lock.Lock, limit int, holder string) *claim {
	var refs []grantRef
	for _, g := range lock.GrantsOf(l) {
		refs = append(refs, grantRef{l.Key(), g.Addr, g.Token})
	}
	return h.begin(l.Key(), limit, holder, refs)
}

// begin begins a claim on the grants named; the grants must be read
// before, so that a loss declared after the claim began names them.
// Without grants the lock was declared lost already.
func (h *history) begin(key string, limit int, holder string, grants []grantRef) *claim {
	return &claim{h: h, key: key, limit: limit, holder: holder, grants: grants, start: h.now()}
}

// finish ends the claim at end (taken with now when the holder stopped
// claiming it: its Release began, or it saw Lost); lost says it ended by
// loss. A loss the client declared earlier ends it at the declaration,
// and a claim declared lost before it began is empty: its holder never
// claimed what it held. It returns whether the end was a declaration
// (for a claim with no grants, lost before it began, always).
func (c *claim) finish(end stamp, lost bool) bool {
	h := c.h
	h.mu.Lock()
	byDeclaration := false
	for _, g := range c.grants {
		if at, ok := h.declared[g]; ok {
			delete(h.declared, g)
			lost = true
			if at.before(end) {
				end, byDeclaration = at, true
			}
		}
	}
	if byDeclaration {
		h.matched++
	}
	if len(c.grants) == 0 {
		// Lost, and declared, between Acquire's return and the claim's
		// beginning: the declaration came first, so it names no grant
		// of the claim, but it was made.
		h.unseen++
		h.mu.Unlock()
		return true
	}
	if end.before(c.start) {
		h.unseen++
		h.mu.Unlock()
		return byDeclaration
	}
	h.mu.Unlock()
	h.add(c.key, c.limit, interval{c.holder, c.start, end, lost})
	return byDeclaration
}

// violations returns every moment where a key had more holders than its
// limit.
func (h *history) violations() []violation {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []violation
	for key, ivs := range h.intervals {
		type edge struct {
			at    stamp
			delta int
			iv    *interval
		}
		edges := make([]edge, 0, 2*len(ivs))
		for i := range ivs {
			iv := &ivs[i]
			edges = append(edges, edge{iv.start, +1, iv}, edge{iv.end, -1, iv})
		}
		// At equal times (claims on the wall clock), ends go first: a
		// hand-over at the same instant is not an overlap. Sequence
		// numbers are never equal.
		sort.Slice(edges, func(i, j int) bool {
			if !edges[i].at.before(edges[j].at) && !edges[j].at.before(edges[i].at) {
				return edges[i].delta < edges[j].delta
			}
			return edges[i].at.before(edges[j].at)
		})
		active := map[*interval]bool{}
		for _, e := range edges {
			if e.delta < 0 {
				delete(active, e.iv)
				continue
			}
			active[e.iv] = true
			if len(active) > h.limits[key] {
				out = append(out, h.violation(key, e.iv, active))
			}
		}
	}
	return out
}

// violation describes the claims active when newest began.
func (h *history) violation(key string, newest *interval, active map[*interval]bool) violation {
	v := violation{text: fmt.Sprintf("%s: %d holders (limit %d) when %s began at %v;", key, len(active), h.limits[key], newest.holder, newest.start)}
	// Blame a claim that ended by loss if there is one (its slot is the
	// one handed on), else the first claim to end.
	var blamed *interval
	for iv := range active {
		v.text += fmt.Sprintf(" [%s %v..%v lost=%v]", iv.holder, iv.start, iv.end, iv.lost)
		if iv == newest {
			continue
		}
		if blamed == nil || (iv.lost && !blamed.lost) || (iv.lost == blamed.lost && iv.end.before(blamed.end)) {
			blamed = iv
		}
	}
	// Either side may be the stale one: a holder whose connection the
	// server had closed, or a new claim whose grant arrived on a
	// connection already closed.
	end := blamed.end
	if newest.end.before(end) {
		end = newest.end
	}
	v.overlap, v.byLoss = end.at.Sub(newest.start.at), blamed.lost || newest.lost
	return v
}

func (h *history) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ivs := range h.intervals {
		n += len(ivs)
	}
	return n
}

// The checker must be able to fail, on the wall clock's order.
func TestHistoryFindsOverlaps(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	h := newHistory()
	h.record("a", 1, "x", at(0), at(10), false)
	h.record("a", 1, "y", at(10), at(20), true) // hand-over at the same instant
	h.record("b", 2, "x", at(0), at(10), false)
	h.record("b", 2, "y", at(5), at(15), false)
	assert.Empty(t, h.violations())

	h.record("a", 1, "z", at(19), at(25), false)
	h.record("b", 2, "z", at(8), at(9), false)
	// Three of limit 2: w's slot was freed by v's loss, though u's
	// release ends first.
	h.record("c", 2, "u", at(0), at(31), false)
	h.record("c", 2, "v", at(0), at(32), true)
	h.record("c", 2, "w", at(30), at(40), false)
	// A grant read from a connection the server had already closed: the
	// new claim is the stale one, lost at once.
	h.record("d", 1, "p", at(0), at(50), false)
	h.record("d", 1, "q", at(20), at(21), true)
	v := h.violations()
	require.Len(t, v, 4)
	assert.Equal(t, 11, h.count())
	for _, x := range v {
		switch {
		case strings.HasPrefix(x.text, "a:"):
			assert.Equal(t, time.Millisecond, x.overlap)
			assert.True(t, x.byLoss, "y's claim ended by loss")
		case strings.HasPrefix(x.text, "b:"):
			assert.Equal(t, time.Millisecond, x.overlap)
			assert.False(t, x.byLoss)
		case strings.HasPrefix(x.text, "d:"):
			assert.Equal(t, time.Millisecond, x.overlap)
			assert.True(t, x.byLoss, "q's claim was lost at once")
		default:
			assert.Equal(t, 2*time.Millisecond, x.overlap)
			assert.True(t, x.byLoss, "v's lost slot is the one handed on")
		}
	}
}

// In virtual time every event below happens at one instant: the
// checker still finds the claims that overlap in the order they
// happened, and only those. A claim lost ends at its loss's
// declaration, not when its holder woke to see it.
func TestHistoryOrdersClaimsLogically(t *testing.T) {
	synctest.Test(t, historyOrdersClaimsLogically)
}

func historyOrdersClaimsLogically(t *testing.T) {
	h := newHistory()
	grant := func(key, tok string) []grantRef { return []grantRef{{key, "s1", tok}} }
	loss := func(key, tok string) lock.LossReport {
		return lock.LossReport{Key: key, Grants: []struct{ Addr, Token string }{{"s1", tok}}}
	}

	// a: x releases, then y takes it; no overlap although every time is
	// equal.
	x := h.begin("a", 0, "x", grant("a", "x1"))
	x.finish(h.now(), false)
	y := h.begin("a", 0, "y", grant("a", "y1"))
	y.finish(h.now(), false)

	// b: p is declared lost and gives the lock back; q takes it before
	// p's worker wakes to see the loss. The claim ended at the
	// declaration: no overlap.
	p := h.begin("b", 0, "p", grant("b", "p1"))
	h.declare(loss("b", "p1"))
	q := h.begin("b", 0, "q", grant("b", "q1"))
	assert.True(t, p.finish(h.now(), true), "p's claim ends at its declaration")
	q.finish(h.now(), false)

	// c: r's loss is declared only after s took the lock (the server
	// handed it on first): a real overlap, found although it took no
	// time.
	r := h.begin("c", 0, "r", grant("c", "r1"))
	s := h.begin("c", 0, "s", grant("c", "s1"))
	h.declare(loss("c", "r1"))
	r.finish(h.now(), true)
	s.finish(h.now(), false)

	// d: u is granted a lock its client declares lost before u looked:
	// an empty claim, which overlaps nothing.
	u := h.begin("d", 0, "u", nil)
	u.finish(h.now(), true)
	w := h.begin("d", 0, "w", grant("d", "w1"))
	h.declare(loss("d", "w1"))
	w2 := h.begin("d", 0, "w2", grant("d", "w2"))
	w.finish(h.now(), true)
	w2.finish(h.now(), false)

	// e: two of a semaphore of 2 hold it; a third begins before either
	// ends: one too many.
	e1 := h.begin("e", 2, "e1", grant("e", "e1"))
	e2 := h.begin("e", 2, "e2", grant("e", "e2"))
	e3 := h.begin("e", 2, "e3", grant("e", "e3"))
	for _, c := range []*claim{e1, e2, e3} {
		c.finish(h.now(), false)
	}

	v := h.violations()
	require.Len(t, v, 2, "%v", v)
	for _, x := range v {
		assert.Zero(t, x.overlap, "the same instant")
		switch {
		case strings.HasPrefix(x.text, "c:"):
			assert.True(t, x.byLoss, "r's claim ended by loss")
		case strings.HasPrefix(x.text, "e:"):
			assert.False(t, x.byLoss)
		default:
			t.Errorf("unexpected violation %s", x.text)
		}
	}
	assert.Equal(t, 11, h.count(), "u's claim was empty")
	assert.Equal(t, 1, h.unseen)
	assert.Equal(t, 3, h.matched, "p, r and w ended by declaration")
}
