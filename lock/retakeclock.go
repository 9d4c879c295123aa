package lock

import (
	"container/heap"
	"sync"
	"time"
)

// retakeClock schedules the background re-takes of every holder of a
// client from one goroutine and one timer, as the renewer schedules the
// renewals: a rolling restart leaves thousands of locks each missing a
// replica, and a timer per holder (time.AfterFunc) started each re-take's
// goroutine from the runtime's timer code. Under the race detector, in
// virtual time, that churn crashed the race runtime now and then
// (golang/go#78156); here a due re-take is started from the clock's own
// goroutine, in the client's task group.
type retakeClock struct {
	tasks *tasks
	mu    sync.Mutex
	queue dueHeap[*retakeEntry]
	wake  chan struct{} // capacity 1: the earliest entry changed
	start sync.Once
}

// ahead returns d, or a nanosecond if d is not positive: a timer is never
// set to a moment already past. Under the race detector, in a synctest
// bubble, a timer due as it was set crashed the race runtime now and then
// (golang/go#78156).
func ahead(d time.Duration) time.Duration { return max(d, time.Nanosecond) }

// retakeEntry is a holder's next re-take, due at at; idx is its place in
// the queue, -1 once out of it.
type retakeEntry struct {
	h   *holder
	at  time.Time
	idx int
}

func newRetakeClock(t *tasks) *retakeClock {
	return &retakeClock{tasks: t, wake: make(chan struct{}, 1)}
}

// schedule has h.retakeMissing run in d, unless cancelled first.
func (c *retakeClock) schedule(h *holder, d time.Duration) *retakeEntry {
	c.start.Do(func() { c.tasks.goFn(c.run) })
	e := &retakeEntry{h: h, at: time.Now().Add(d)}
	c.mu.Lock()
	heap.Push(&c.queue, e)
	first := e.idx == 0
	c.mu.Unlock()
	if first {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return e
}

// cancel takes e out of the queue, if it is still there.
func (c *retakeClock) cancel(e *retakeEntry) {
	c.mu.Lock()
	if e.idx >= 0 {
		heap.Remove(&c.queue, e.idx)
	}
	c.mu.Unlock()
}

// run starts each re-take when it is due, until the client closes.
func (c *retakeClock) run() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		var due []*holder
		next := time.Hour
		c.mu.Lock()
		for len(c.queue) > 0 {
			if wait := c.queue[0].at.Sub(now); wait > 0 {
				next = wait
				break
			}
			due = append(due, heap.Pop(&c.queue).(*retakeEntry).h)
		}
		c.mu.Unlock()
		for _, h := range due {
			c.tasks.goFn(h.retakeMissing)
		}
		t.Reset(next)
		select {
		case <-t.C:
		case <-c.wake:
		case <-c.tasks.ctx.Done():
			return
		}
	}
}

func (e *retakeEntry) dueAt() time.Time { return e.at }
func (e *retakeEntry) setIdx(i int)     { e.idx = i }
