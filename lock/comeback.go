package lock

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// A server that comes back (restarted, or reachable again) has lost every
// replica the client held there. Each held lock would take its replica
// again on its own backoff, up to retakeMax later, one try-lock each; in
// a rolling restart the next server may go down first, and a lock left
// on fewer than a quorum is lost. So the pool says when the server
// answers again (pool.Config.OnReturn), and the client takes every
// missing replica there at once, many try-locks to a write.

// serverBack runs retakeOn for addr in the client's task group.
func (c *Client) serverBack(addr string) {
	c.tasks.goFn(func() { c.retakeOn(addr) })
}

// retakeAt is a replica to take again: slot i of h.
type retakeAt struct {
	h *holder
	i int
}

// retakeChunk is how many try-locks of a server's return go out in one
// write, and are awaited together: a chunk's answers count as soon as it
// is in, and its deadline starts when it is sent (retakeWindow of them
// are out at once). One batch of 20,000 took longer than the replica
// timeout on a loaded machine against a server answering steadily, and
// its every answer was given up.
const retakeChunk = 512

// retakeOn sends a try-lock for every replica the held locks lack on the
// server at addr, in chunks (each in one write, a few out at once), and
// takes in the answers as a background re-take does (see
// holder.retakeNow). Once a chunk finds the server gone again, the rest
// are left to each lock's own re-take.
func (c *Client) retakeOn(addr string) {
	c.mu.RLock()
	p := c.pools[addr]
	ls := make([]*Lock, 0, len(c.active))
	for l := range c.active {
		ls = append(ls, l)
	}
	c.mu.RUnlock()
	if p == nil {
		return
	}
	var at []retakeAt
	var reqs []wire.Request
	for _, l := range ls {
		if a, ok := l.missingOn(addr); ok {
			at = append(at, a)
			reqs = append(reqs, l.request(l.cmds.Acquire))
		}
	}
	r := &retaking{c: c, p: p, window: make(chan struct{}, retakeWindow)}
	for start := 0; start < len(at); start += retakeChunk {
		end := min(start+retakeChunk, len(at))
		r.window <- struct{}{}
		r.wg.Add(1)
		chunk := func() {
			defer func() { <-r.window; r.wg.Done() }()
			r.chunk(at[start:end], reqs[start:end])
		}
		if !c.tasks.goFn(chunk) {
			chunk() // closing: the pool fails it at once
		}
	}
	r.wg.Wait()
	if len(at) > 0 {
		c.log.Debug("lock: a server answers again; took back the replicas held there", "server", addr, "missing", len(at), "taken", r.taken.Load())
	}
}

// retakeWindow is how many chunks of a return's re-take are out at once:
// one after another, 20,000 replicas took 40 round trips, and against a
// real dflockd on a loaded core a return was still being re-taken when
// the next server of a rolling restart went down.
const retakeWindow = 4

// retaking is the re-take of a returning server's missing replicas, in
// chunks, window of them at a time.
type retaking struct {
	c      *Client
	p      *pool.Pool
	window chan struct{}
	wg     sync.WaitGroup
	taken  atomic.Int64
	mu     sync.Mutex
	gone   error // the server went away again: the chunks left are not sent
}

// chunk sends one chunk's try-locks, in one write, with a deadline from
// its sending, and hands each answer to its holder.
func (r *retaking) chunk(at []retakeAt, reqs []wire.Request) {
	ctx := r.c.tasks.ctx
	r.mu.Lock()
	gone := r.gone
	r.mu.Unlock()
	var res []pool.Result
	var errs []error
	if gone == nil {
		res, errs = r.p.DoAllBy(ctx, reqs, time.Now().Add(r.c.replicaTimeout))
	} else {
		res, errs = make([]pool.Result, len(at)), make([]error, len(at))
		for j := range errs {
			errs[j] = gone // not sent: a lock's own re-take will
		}
	}
	for j, a := range at {
		o := a.h.tried(ctx, a.i, res[j], errs[j])
		if o.took {
			r.taken.Add(1)
		}
		outs := make([]tryOutcome, len(a.h.slots))
		outs[a.i] = o
		a.h.mu.Lock()
		a.h.retakenLocked([]int{a.i}, outs)
		a.h.mu.Unlock()
	}
	if last := errs[len(errs)-1]; gone == nil && last != nil && !errors.Is(last, pool.ErrNoReply) {
		r.mu.Lock()
		r.gone = last // broken or closed: the server is gone again
		r.mu.Unlock()
	}
}

// missingOn returns the replica a held lock lacks on the server at addr,
// and marks a try-lock out to it; false if none is missing there (or one
// is being taken).
func (l *Lock) missingOn(addr string) (retakeAt, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.h
	if l.state != stateHeld || h == nil {
		return retakeAt{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	i := h.index(addr)
	if i < 0 || h.over || h.taking {
		return retakeAt{}, false
	}
	s := &h.slots[i]
	if s.grant != nil || s.pending || !h.keptLocked(i) {
		return retakeAt{}, false
	}
	s.pending = true
	return retakeAt{h, i}, true
}

// withOnReturn is cfg with OnReturn calling the client's serverBack for
// addr, then the caller's own, if any.
func (c *Client) withOnReturn(cfg pool.Config, addr string) pool.Config {
	theirs := cfg.OnReturn
	cfg.OnReturn = func() {
		c.serverBack(addr)
		if theirs != nil {
			theirs()
		}
	}
	return cfg
}
