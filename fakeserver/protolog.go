package fakeserver

import (
	"log/slog"
	"sort"
	"sync"
	"time"
)

// protocolLogInterval is how often the server logs, for each kind of
// protocol error, how many it did not log line by line.
const protocolLogInterval = 10 * time.Second

// protocolLog throttles the log of protocol errors (requests the server
// cannot parse, lines too long, read timeouts, failed authentication).
// A client that sends garbage, or a flood of them, is not the operator's
// to stop, and a line per error wrote 272 MB in a minute under such a
// flood. So within each interval the first error of a kind is logged
// whole (with its connection, to find the sender) and the rest are
// counted; when the interval ends, each count above zero is logged as
// one line. A flood then writes at most two lines per kind per interval.
//
// Intervals are aligned to the server's start. They end on a tick from
// the server's background loop, or, once that has stopped (a graceful
// shutdown drains connections after it), on the next error or at the end.
type protocolLog struct {
	log      *slog.Logger
	interval time.Duration

	mu     sync.Mutex
	since  time.Time      // when the current interval began
	counts map[string]int // kind → errors past the first in this interval
}

func newProtocolLog(log *slog.Logger, interval time.Duration) *protocolLog {
	return &protocolLog{log: log, interval: interval, since: time.Now(), counts: make(map[string]int)}
}

// admit reports whether an error of kind is to be logged whole: the first
// of its kind in the interval. It counts the others.
func (p *protocolLog) admit(kind string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rollLocked(time.Now())
	n, seen := p.counts[kind]
	if !seen {
		p.counts[kind] = 0
		return true
	}
	p.counts[kind] = n + 1
	return false
}

// roll ends the interval if it is over.
func (p *protocolLog) roll(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rollLocked(now)
}

func (p *protocolLog) rollLocked(now time.Time) {
	elapsed := now.Sub(p.since)
	if elapsed < p.interval {
		return
	}
	p.flushLocked()
	// Every error counted was admitted before the interval ended (admit
	// rolls first), so the counts belong to that one interval however
	// late it is rolled.
	p.since = p.since.Add(elapsed.Truncate(p.interval))
}

// flush logs what the current interval counted, as the server stops.
func (p *protocolLog) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flushLocked()
}

func (p *protocolLog) flushLocked() {
	kinds := make([]string, 0, len(p.counts))
	for k, n := range p.counts {
		if n > 0 {
			kinds = append(kinds, k)
		}
	}
	// One order for the lines of an interval, so that logs compare.
	sort.Strings(kinds)
	for _, k := range kinds {
		p.log.Warn("more protocol errors of this kind", "kind", k, "count", p.counts[k], "within", p.interval)
	}
	clear(p.counts)
}
