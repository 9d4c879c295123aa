package lock

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// renewer renews every lock a Client holds: one goroutine and one timer
// for all of them. Locks wait in a heap ordered by when they next need
// attention. When renewals fall due, those for one server go out together
// on one pipelined connection (pool.DoAll). While a renewal is in flight
// the lock waits in the heap for the end of its confirmed lease: if the
// reply has not come by then, the lock is lost at that moment.
type renewer struct {
	c     *Client
	mu    sync.Mutex
	locks lockHeap
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	batch sync.WaitGroup

	sent    atomic.Uint64 // renewals sent
	retries atomic.Uint64 // renewals that failed in transit and were retried
}

// retryDelay spaces out retries of a renewal that failed in transit (a
// broken shared connection, say), while its lease lasts.
const retryDelay = 100 * time.Millisecond

func newRenewer(c *Client) *renewer {
	r := &renewer{c: c, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

// schedule sets l's next renewal to at; the renewer also looks at it at
// its deadline, if that comes sooner.
func (r *renewer) schedule(l *Lock, at time.Time) {
	deadline := l.deadline()
	r.mu.Lock()
	l.renewAt, l.renewing = at, false
	l.due = minTime(at, deadline)
	if l.heapIdx >= 0 {
		heap.Fix(&r.locks, l.heapIdx)
	} else {
		heap.Push(&r.locks, l)
	}
	first := l.heapIdx == 0
	r.mu.Unlock()
	if first {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

func (r *renewer) remove(l *Lock) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.heapIdx >= 0 {
		heap.Remove(&r.locks, l.heapIdx)
	}
}

func (r *renewer) close() {
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
		if len(r.locks) > 0 {
			next = time.Until(r.locks[0].due)
		}
		r.mu.Unlock()
		t.Reset(max(next, 0))
		select {
		case <-t.C:
		case <-r.wake:
		case <-r.stop:
			return
		}
		r.tick(time.Now())
	}
}

// tick handles every lock whose time has come.
func (r *renewer) tick(now time.Time) {
	var lost []*Lock
	batches := map[*pool.Pool][]*Lock{}
	r.mu.Lock()
	for len(r.locks) > 0 && !r.locks[0].due.After(now) {
		l := r.locks[0]
		l.mu.Lock()
		deadline, p := l.deadlineLocked(), l.p
		l.mu.Unlock()
		switch {
		case !now.Before(deadline):
			// No renewal was confirmed before the lease ended, or the
			// owning connection was silent for the server's read timeout.
			heap.Pop(&r.locks)
			lost = append(lost, l)
			continue
		case l.renewing:
			// The reply is still awaited; the deadline moved (keep-alives
			// answered on the owning connection).
			l.due = deadline
		case now.Before(l.renewAt):
			l.due = minTime(l.renewAt, deadline)
		default:
			l.renewing, l.due = true, deadline
			batches[p] = append(batches[p], l)
		}
		heap.Fix(&r.locks, 0)
	}
	r.mu.Unlock()
	for _, l := range lost {
		l.markLost(l.expiredErr())
	}
	for p, ls := range batches {
		r.batch.Add(1)
		go func() {
			defer r.batch.Done()
			r.renew(p, ls)
		}()
	}
}

// renew sends the renewals due on one server in one batch. Each carries
// the lease the lock holds, since a renew without one resets the lease to
// the server's default.
func (r *renewer) renew(p *pool.Pool, ls []*Lock) {
	reqs := make([]wire.Request, 0, len(ls))
	tokens := make([]string, 0, len(ls))
	live := ls[:0]
	var deadline time.Time
	for _, l := range ls {
		l.mu.Lock()
		tok, lease, expires := l.token, l.lease, l.expires
		l.mu.Unlock()
		if tok == "" {
			continue // released or lost meanwhile
		}
		req := l.request(l.cmds.renew)
		req.Token, req.Lease = tok, int(lease/time.Second)
		reqs = append(reqs, req)
		tokens = append(tokens, tok)
		live = append(live, l)
		if expires.After(deadline) {
			deadline = expires
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	sent := time.Now()
	results, errs := p.DoAll(ctx, reqs)
	r.sent.Add(uint64(len(reqs)))
	for i, l := range live {
		switch {
		case errs[i] != nil:
			// Lost in transit; try again while the lease lasts. The heap
			// entry still waits for the lease's end meanwhile.
			r.retries.Add(1)
			r.retry(l, tokens[i])
		case results[i].Resp.Err() != nil:
			l.markLost(fmt.Errorf("%w: %s refused to renew %q: %w", ErrLockLost, p.Addr(), l.key, results[i].Resp.Err()))
		default:
			r.renewed(l, tokens[i], time.Duration(results[i].Resp.Lease)*time.Second, sent)
		}
	}
}

func (r *renewer) renewed(l *Lock, tok string, lease time.Duration, sent time.Time) {
	l.mu.Lock()
	if l.token != tok {
		l.mu.Unlock()
		return // lost or released while the renewal was in flight
	}
	l.lease = lease
	l.expires = sent.Add(lease)
	l.mu.Unlock()
	r.schedule(l, sent.Add(time.Duration(float64(lease)*l.opt.renewRatio)))
}

func (r *renewer) retry(l *Lock, tok string) {
	l.mu.Lock()
	held, expires := l.token == tok, l.expires
	l.mu.Unlock()
	if held {
		r.schedule(l, minTime(time.Now().Add(retryDelay), expires))
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// lockHeap orders locks by due time.
type lockHeap []*Lock

func (h lockHeap) Len() int           { return len(h) }
func (h lockHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h lockHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *lockHeap) Push(x any) {
	l := x.(*Lock)
	l.heapIdx = len(*h)
	*h = append(*h, l)
}
func (h *lockHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	l.heapIdx = -1
	*h = old[:len(old)-1]
	return l
}
