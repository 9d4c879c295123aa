package lock

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/pool"
)

// renewer renews every grant a Client's locks hold: one goroutine and one
// timer for all of them. Each grant has one entry, ordered in a heap by
// when it next needs attention. When renewals fall due, those for one
// server go out together on one pipelined connection (pool.Renew). While
// a renewal is in flight the entry waits for the grant's deadline: if no
// confirmation has moved it by then, the grant is lost at that moment.
//
// An entry belongs to one grant: whatever its renewal's answer, it is
// applied to that grant by the pool, never to whatever the lock holds by
// the time the answer comes.
type renewer struct {
	c     *Client
	mu    sync.Mutex // guards entries and every entry's renewer fields
	heap  dueHeap[*renewal]
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	batch sync.WaitGroup
	// ctx bounds the renewals in flight; close cancels it, so that a
	// renewal waiting on a stalled server (up to its lease's deadline)
	// does not hold up Client.Close past its CloseTimeout.
	ctx    context.Context
	cancel context.CancelFunc

	sent    atomic.Uint64 // renewals sent
	retries atomic.Uint64 // renewals that failed in transit and were retried
}

// renewal is one grant's entry in the renewer.
type renewal struct {
	l *Lock
	g *pool.Grant
	// h holds g as replica i; set when made. The entry listens to g's
	// loss for it (see GrantLost), so that a grant costs no closure.
	h *holder
	i int

	// Guarded by renewer.mu.
	due      time.Time // when the renewer next looks at it
	renewAt  time.Time // when the next renewal is due
	idx      int       // in the heap; -1 when out of it
	inFlight bool
}

// GrantLost tells the holder that its replica's grant g was lost.
func (e *renewal) GrantLost(g *pool.Grant, err error) { e.h.replicaLost(e.i, g, err) }

// retryDelay spaces out retries of a renewal that failed in transit (a
// broken shared connection, say), while the grant's deadline lasts.
const retryDelay = 100 * time.Millisecond

func newRenewer(c *Client) *renewer {
	r := &renewer{c: c, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.run()
	return r
}

// add starts renewing e's grant.
func (r *renewer) add(e *renewal) { r.reschedule(e, false) }

// reschedule sets e's next renewal from its grant's confirmed lease; the
// renewer also looks at it at the grant's deadline, if that comes sooner.
// retry asks for an early retry instead.
func (r *renewer) reschedule(e *renewal, retry bool) {
	since, lease := e.g.Lease()
	at := since.Add(time.Duration(float64(lease) * e.l.opt.renewRatio))
	if retry {
		at = time.Now().Add(retryDelay)
	}
	deadline := e.g.Deadline()
	r.mu.Lock()
	e.renewAt, e.inFlight = at, false
	e.due = minTime(at, deadline)
	if e.idx >= 0 {
		heap.Fix(&r.heap, e.idx)
	} else {
		heap.Push(&r.heap, e)
	}
	first := e.idx == 0
	r.mu.Unlock()
	if first {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// remove stops renewing e's grant; nil is a no-op.
func (r *renewer) remove(e *renewal) {
	if e == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.idx >= 0 {
		heap.Remove(&r.heap, e.idx)
	}
}

func (r *renewer) close() {
	r.cancel()
	close(r.stop)
	<-r.done
	r.batch.Wait()
}

func (r *renewer) run() {
	defer close(r.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		r.mu.Lock()
		next := time.Hour
		if len(r.heap) > 0 {
			next = time.Until(r.heap[0].due)
		}
		r.mu.Unlock()
		t.Reset(ahead(next))
		select {
		case <-t.C:
		case <-r.wake:
		case <-r.stop:
			return
		}
		r.tick(time.Now())
	}
}

// tick handles every entry whose time has come.
func (r *renewer) tick(now time.Time) {
	var expired []*pool.Grant
	batches := map[*pool.Pool][]*renewal{}
	r.mu.Lock()
	for len(r.heap) > 0 && !r.heap[0].due.After(now) {
		e := r.heap[0]
		deadline := e.g.Deadline()
		switch {
		case deadline.IsZero():
			// Released or lost: nothing to renew.
			heap.Pop(&r.heap)
			continue
		case !now.Before(deadline):
			// No renewal was confirmed in time, or the owning connection
			// was silent for the server's read timeout.
			heap.Pop(&r.heap)
			expired = append(expired, e.g)
			continue
		case e.inFlight:
			// The reply is still awaited; the deadline moved (keep-alives
			// answered on the owning connection).
			e.due = deadline
		case now.Before(e.renewAt):
			e.due = minTime(e.renewAt, deadline)
		default:
			e.inFlight, e.due = true, deadline
			p := e.g.Pool()
			batches[p] = append(batches[p], e)
		}
		heap.Fix(&r.heap, 0)
	}
	r.mu.Unlock()
	for _, g := range expired {
		g.Drop(errDeadline)
	}
	for p, es := range batches {
		r.batch.Add(1)
		go func() {
			defer r.batch.Done()
			r.renew(p, es)
		}()
	}
}

// renew sends the renewals due on one server in one batch. Each carries
// the lease its grant holds, since a renew without one resets the lease
// to the server's default.
func (r *renewer) renew(p *pool.Pool, es []*renewal) {
	rs := make([]pool.Renewal, len(es))
	var deadline time.Time
	for i, e := range es {
		_, lease := e.g.Lease()
		rs[i] = pool.Renewal{Grant: e.g, Lease: seconds(lease)}
		if d := e.g.Deadline(); d.After(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(r.ctx, deadline)
	defer cancel()
	start := time.Now()
	errs := p.Renew(ctx, rs)
	rtt := time.Since(start)
	m := r.c.metrics
	r.sent.Add(uint64(len(rs)))
	var tally [len(results)]int64
	for i, e := range es {
		switch err := errs[i]; {
		case err == nil:
			tally[0]++
			r.reschedule(e, false)
		case errors.Is(err, pool.ErrGrantLost), errors.Is(err, pool.ErrNotHeld):
			// Lost (its callback told the lock) or released meanwhile.
			tally[1]++
			r.remove(e)
		default:
			// Lost in transit: try again while the deadline lasts; the
			// entry waits for the deadline meanwhile.
			tally[2]++
			r.retries.Add(1)
			r.reschedule(e, true)
		}
	}
	if m.off {
		return
	}
	so := m.forServer(p.Addr())
	if tally[0]+tally[1] > 0 {
		// A round trip only if the server answered.
		m.renewRTT.Record(ctx, rtt.Seconds(), so.server.rec...)
	}
	for i, n := range tally {
		if n > 0 {
			m.renewals.Add(ctx, n, so.result[i].add...)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (e *renewal) dueAt() time.Time { return e.due }
func (e *renewal) setIdx(i int)     { e.idx = i }
