package lock_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// history records, for every key, when each holder held it from the
// client's point of view: from Acquire returning true until the holder
// stopped claiming it (its Release began, or it learned the lock was
// lost). Two claims of a lock that overlap, or more claims of a
// semaphore than its limit, break mutual exclusion.
type history struct {
	mu        sync.Mutex
	intervals map[string][]interval
	limits    map[string]int
}

type interval struct {
	holder     string
	start, end time.Time
	lost       bool // the claim ended because the lock was lost
}

// violation is a moment a key had more holders than its limit.
type violation struct {
	text string
	// overlap lasts from the newest claim's start until the first of the
	// others ended; byLoss says that claim ended by loss (the client
	// learned it late) rather than by release.
	overlap time.Duration
	byLoss  bool
}

func newHistory() *history {
	return &history{intervals: map[string][]interval{}, limits: map[string]int{}}
}

func (h *history) record(key string, limit int, holder string, start, end time.Time, lost bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.intervals[key] = append(h.intervals[key], interval{holder, start, end, lost})
	h.limits[key] = max(limit, 1)
}

// violations returns every moment where a key had more holders than its
// limit.
func (h *history) violations() []violation {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []violation
	for key, ivs := range h.intervals {
		type edge struct {
			at    time.Time
			delta int
			who   string
			iv    interval
		}
		edges := make([]edge, 0, 2*len(ivs))
		for _, iv := range ivs {
			edges = append(edges, edge{iv.start, +1, iv.holder, iv}, edge{iv.end, -1, iv.holder, iv})
		}
		// At equal times, ends go first: a hand-over at the same instant
		// is not an overlap.
		sort.Slice(edges, func(i, j int) bool {
			if edges[i].at.Equal(edges[j].at) {
				return edges[i].delta < edges[j].delta
			}
			return edges[i].at.Before(edges[j].at)
		})
		active := map[interval]bool{}
		for _, e := range edges {
			if e.delta < 0 {
				delete(active, e.iv)
				continue
			}
			active[e.iv] = true
			if len(active) > h.limits[key] {
				v := violation{text: fmt.Sprintf("%s: %d holders (limit %d) when %s began at %s;", key, len(active), h.limits[key], e.who, e.at.Format("15:04:05.000000"))}
				// Blame a claim that ended by loss if there is one (its slot
				// is the one handed on), else the first claim to end.
				var blamed interval
				for iv := range active {
					v.text += fmt.Sprintf(" [%s %s..%s lost=%v]", iv.holder, iv.start.Format("05.000000"), iv.end.Format("05.000000"), iv.lost)
					if iv == e.iv {
						continue
					}
					better := blamed.end.IsZero() || (iv.lost && !blamed.lost) || (iv.lost == blamed.lost && iv.end.Before(blamed.end))
					if better {
						blamed = iv
					}
				}
				// Either side may be the stale one: a holder whose
				// connection the server had closed, or a new claim whose
				// grant arrived on a connection already closed.
				v.overlap, v.byLoss = minTime(blamed.end, e.iv.end).Sub(e.at), blamed.lost || e.iv.lost
				out = append(out, v)
			}
		}
	}
	return out
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

// The checker must be able to fail.
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

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
