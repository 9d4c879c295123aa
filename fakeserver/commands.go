package fakeserver

import (
	"time"

	"github.com/dflock-go/dflock/wire"
)

// outcome of a request: a reply to send, or the client gone mid-request.
type outcome struct {
	resp wire.Response
	gone bool
}

func reply(cmd wire.Command, st wire.Status) outcome {
	return outcome{resp: wire.Response{Cmd: cmd, Status: st}}
}

func granted(cmd wire.Command, st wire.Status, h *holder) outcome {
	return outcome{resp: wire.Response{Cmd: cmd, Status: st, Token: h.token, Lease: int(h.lease / time.Second)}}
}

func (s *Server) leaseOf(req *wire.Request) time.Duration {
	if req.Lease > 0 {
		return time.Duration(req.Lease) * time.Second
	}
	return s.cfg.DefaultLeaseTTL
}

// handle answers one request. Lock requests with a timeout and waits may
// block; they flush the replies already queued first, so a pipelining
// client gets the answers to everything it sent before.
func (c *conn) handle(req *wire.Request) outcome {
	switch req.Cmd {
	case wire.CmdLock:
		return c.acquire(req, 1)
	case wire.CmdSemLock:
		return c.acquire(req, req.Limit)
	case wire.CmdRelease, wire.CmdSemRelease:
		return c.release(req)
	case wire.CmdRenew, wire.CmdSemRenew:
		return c.renew(req)
	case wire.CmdEnqueue:
		return c.enqueue(req, 1)
	case wire.CmdSemEnqueue:
		return c.enqueue(req, req.Limit)
	case wire.CmdWait, wire.CmdSemWait:
		return c.wait(req)
	case wire.CmdStats:
		body, err := wire.AppendStats(nil, c.srv.snapshot(time.Now()))
		if err != nil {
			return reply(req.Cmd, wire.StatusError)
		}
		return outcome{resp: wire.Response{Cmd: req.Cmd, Status: wire.StatusOK, Body: string(body)}}
	default:
		// auth on a server without a token, or a second auth: the real
		// server handles it as an ordinary request and answers error.
		return reply(req.Cmd, wire.StatusError)
	}
}

// admit applies, under s.mu, the rules that every acquire and enqueue
// share: the key's limit and max-locks, eviction of expired holders, a
// grant when a slot is free and nobody waits, then (if the request may
// wait at all) max-waiters. It returns the key's entry and either a grant,
// or a failure status, or neither: the request is to be queued.
func (c *conn) admit(req *wire.Request, limit int, mayWait bool, now time.Time) (*entry, *holder, wire.Status) {
	s := c.srv
	e, st := s.lookup(req.Key, limit, now)
	if st != 0 {
		return nil, nil, st
	}
	s.evict(e, now)
	e.lastActive = now
	switch {
	case e.free():
		return e, s.grant(e, c, s.leaseOf(req), now), 0
	case !mayWait:
		return e, nil, wire.StatusTimeout
	case s.cfg.MaxWaiters > 0 && e.waiters >= s.cfg.MaxWaiters:
		return e, nil, wire.StatusErrorMaxWaiters
	}
	return e, nil, 0
}

func (c *conn) acquire(req *wire.Request, limit int) outcome {
	s := c.srv
	s.mu.Lock()
	e, h, st := c.admit(req, limit, req.Timeout > 0, time.Now())
	if st != 0 {
		s.mu.Unlock()
		return reply(req.Cmd, st)
	}
	if h != nil {
		s.mu.Unlock()
		return granted(req.Cmd, wire.StatusOK, h)
	}
	w := &waiter{c: c, lease: s.leaseOf(req), ready: make(chan struct{})}
	e.enqueue(w)
	c.blocked = w
	s.mu.Unlock()

	res := c.block(w.ready, time.Duration(req.Timeout)*time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	if res == blockGone {
		return outcome{gone: true} // closing the connection drops w
	}
	c.blocked = nil
	if h := w.granted; h != nil && h.gone == held {
		return granted(req.Cmd, wire.StatusOK, h)
	}
	e.unlink(w)
	return reply(req.Cmd, wire.StatusTimeout)
}

func (c *conn) release(req *wire.Request) outcome {
	s := c.srv
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.holderOf(req, false, now)
	if h == nil {
		return reply(req.Cmd, wire.StatusError)
	}
	s.removeHolder(h, goneReleased, now)
	s.promote(h.e, now)
	return reply(req.Cmd, wire.StatusOK)
}

func (c *conn) renew(req *wire.Request) outcome {
	s := c.srv
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	// An expired holder is evicted before the lookup, so a renew never
	// resurrects it.
	h := s.holderOf(req, true, now)
	if h == nil {
		return reply(req.Cmd, wire.StatusError)
	}
	h.lease = s.leaseOf(req)
	h.expires = now.Add(h.lease)
	h.e.lastActive = now
	return outcome{resp: wire.Response{Cmd: req.Cmd, Status: wire.StatusOK, Lease: int(h.lease / time.Second)}}
}

// holderOf finds the holder a release or renew names by key and token; nil
// when the key or the token is unknown. Any connection may name it.
func (s *Server) holderOf(req *wire.Request, evictFirst bool, now time.Time) *holder {
	e := s.tab.keys[req.Key]
	if e == nil {
		return nil
	}
	if evictFirst {
		s.evict(e, now)
	}
	return e.find(req.Token)
}

func (c *conn) enqueue(req *wire.Request, limit int) outcome {
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := c.enq[req.Key]; dup {
		return reply(req.Cmd, wire.StatusErrorAlreadyEnqueued)
	}
	e, h, st := c.admit(req, limit, true, time.Now())
	if st != 0 {
		return reply(req.Cmd, st)
	}
	if h != nil {
		c.enq[req.Key] = &waiter{c: c, e: e, lease: h.lease, granted: h}
		return granted(req.Cmd, wire.StatusAcquired, h)
	}
	w := &waiter{c: c, lease: s.leaseOf(req), ready: make(chan struct{})}
	e.enqueue(w)
	c.enq[req.Key] = w
	return reply(req.Cmd, wire.StatusQueued)
}

func (c *conn) wait(req *wire.Request) outcome {
	s := c.srv
	s.mu.Lock()
	w := c.enq[req.Key]
	if w == nil {
		s.mu.Unlock()
		return reply(req.Cmd, wire.StatusErrorNotEnqueued)
	}
	if w.granted == nil && req.Timeout > 0 {
		s.mu.Unlock()
		if c.block(w.ready, time.Duration(req.Timeout)*time.Second) == blockGone {
			return outcome{gone: true} // closing the connection drops w
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	// Whatever happens now, the registration is consumed.
	delete(c.enq, req.Key)
	h := w.granted
	if h == nil {
		w.e.unlink(w)
		return reply(req.Cmd, wire.StatusTimeout)
	}
	now := time.Now()
	switch {
	case h.gone == held && now.Before(h.expires):
		// The holder gets its full lease from the moment wait returns.
		h.expires = now.Add(h.lease)
		return granted(req.Cmd, wire.StatusOK, h)
	case h.gone == held: // expired, not swept yet
		s.removeHolder(h, goneExpired, now)
		s.promote(h.e, now)
		return reply(req.Cmd, wire.StatusErrorLeaseExpired)
	case h.gone == goneExpired:
		return reply(req.Cmd, wire.StatusErrorLeaseExpired)
	default: // released (by token, possibly from another connection)
		return reply(req.Cmd, wire.StatusError)
	}
}
