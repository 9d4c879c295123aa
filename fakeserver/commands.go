package fakeserver

import (
	"time"

	"github.com/dflock-go/dflock/wire"
)

// outcome of a request: a reply to send, or the connection closed by the
// server mid-request.
type outcome struct {
	resp wire.Response
	gone bool
}

func reply(cmd wire.Command, st wire.Status) outcome {
	return outcome{resp: wire.Response{Cmd: cmd, Status: st}}
}

// grantReply is "ok TOKEN LEASE" or "acquired TOKEN LEASE"; secs is the
// lease in whole seconds as the real server computes it for the command.
func (s *Server) grantReply(cmd wire.Command, st wire.Status, token string, secs int) outcome {
	return outcome{resp: wire.Response{Cmd: cmd, Status: st, Token: token, Lease: s.leaseSeconds(secs)}}
}

// handle answers one request. Lock requests with a timeout and waits may
// block; they flush the replies already queued first, so a pipelining
// client gets the answers to everything it sent before.
func (c *conn) handle(req *request) outcome {
	switch req.cmd {
	case wire.CmdLock:
		return c.acquire(req, 1)
	case wire.CmdSemLock:
		return c.acquire(req, req.limit)
	case wire.CmdRelease, wire.CmdSemRelease:
		return c.release(req)
	case wire.CmdRenew, wire.CmdSemRenew:
		return c.renew(req)
	case wire.CmdEnqueue:
		return c.enqueue(req, 1)
	case wire.CmdSemEnqueue:
		return c.enqueue(req, req.limit)
	case wire.CmdWait, wire.CmdSemWait:
		return c.wait(req)
	case wire.CmdStats:
		body, err := wire.AppendStats(nil, c.srv.snapshot(time.Now()))
		if err != nil {
			return reply(req.cmd, wire.StatusError)
		}
		return outcome{resp: wire.Response{Cmd: req.cmd, Status: wire.StatusOK, Body: string(body)}}
	default:
		// auth on a server without a token, or a second auth: the real
		// server handles it as an ordinary request and answers error.
		return reply(req.cmd, wire.StatusError)
	}
}

// admit applies, under s.mu, the rules that every acquire and enqueue
// share, in the real server's order: the key's limit and max-locks,
// eviction of expired holders, a grant when a slot is free and nobody
// waits, then max-waiters, and only then (if the request may not wait) a
// timeout. So a try-lock on a key whose queue is full is answered
// error_max_waiters, not timeout. It returns the key's entry and either a
// grant, or a failure status, or neither: the request is to be queued.
func (c *conn) admit(req *request, limit int, mayWait bool, now time.Time) (*entry, *holder, wire.Status) {
	s := c.srv
	e, st := s.lookup(req.key, limit, now)
	if st != 0 {
		return nil, nil, st
	}
	e.lastActive = now
	s.evict(e, now)
	switch {
	case e.free():
		return e, s.grant(e, c, req.lease, now), 0
	case s.cfg.MaxWaiters > 0 && e.waiters >= s.cfg.MaxWaiters:
		return e, nil, wire.StatusErrorMaxWaiters
	case !mayWait:
		return e, nil, wire.StatusTimeout
	}
	return e, nil, 0
}

func (c *conn) acquire(req *request, limit int) outcome {
	s := c.srv
	// The real server replies with the lease it was asked for, in whole
	// seconds (0, from a lease that wrapped around, shows the default).
	secs := int(req.lease.Seconds())
	s.mu.Lock()
	// A timeout that wrapped around to a negative duration does not wait,
	// as a try-lock.
	e, h, st := c.admit(req, limit, req.timeout > 0, time.Now())
	if st != 0 {
		s.mu.Unlock()
		return reply(req.cmd, st)
	}
	if h != nil {
		s.mu.Unlock()
		return s.grantReply(req.cmd, wire.StatusOK, h.token, secs)
	}
	w := &waiter{c: c, lease: req.lease, ready: make(chan struct{})}
	e.enqueue(w)
	c.blocked = w
	s.mu.Unlock()

	res := c.block(w.ready, req.timeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	if res == blockGone {
		return outcome{gone: true} // closing the connection drops w
	}
	c.blocked = nil
	e.lastActive = time.Now()
	if h := w.granted; h != nil {
		// Granted, possibly just as the wait ended: the grant wins, as
		// in the real server. It is answered even if its lease ran out
		// meanwhile.
		return s.grantReply(req.cmd, wire.StatusOK, h.token, secs)
	}
	e.unlink(w)
	if res == blockShutdown {
		return reply(req.cmd, wire.StatusError)
	}
	return reply(req.cmd, wire.StatusTimeout)
}

// release frees the slot a token holds, from any connection. It does not
// look at the lease: an expired holder not swept yet is released "ok".
func (c *conn) release(req *request) outcome {
	s := c.srv
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tab.keys[req.key]
	if e == nil {
		return reply(req.cmd, wire.StatusError)
	}
	e.lastActive = now // even for an unknown token, as the real server
	h := e.find(req.token)
	if h == nil {
		return reply(req.cmd, wire.StatusError)
	}
	s.removeHolder(h, goneReleased, now)
	s.promote(e, now)
	return reply(req.cmd, wire.StatusOK)
}

// renew restarts a holder's lease, from any connection. A holder whose
// lease ran out (swept or not) is not resurrected: it is evicted and the
// renew fails. The key's other holders are left alone, expired or not;
// only an acquire, an enqueue or the sweep evicts them.
func (c *conn) renew(req *request) outcome {
	s := c.srv
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tab.keys[req.key]
	if e == nil {
		return reply(req.cmd, wire.StatusError)
	}
	e.lastActive = now
	h := e.find(req.token)
	if h == nil {
		return reply(req.cmd, wire.StatusError)
	}
	if !now.Before(h.expires) {
		s.removeHolder(h, goneExpired, now)
		s.promote(e, now)
		return reply(req.cmd, wire.StatusError)
	}
	h.lease = req.lease
	h.expires = now.Add(req.lease)
	return outcome{resp: wire.Response{Cmd: req.cmd, Status: wire.StatusOK, Lease: max(int(req.lease.Seconds()), 0)}}
}

func (c *conn) enqueue(req *request, limit int) outcome {
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := c.enq[req.key]; dup {
		return reply(req.cmd, wire.StatusErrorAlreadyEnqueued)
	}
	e, h, st := c.admit(req, limit, true, time.Now())
	if st != 0 {
		return reply(req.cmd, st)
	}
	secs := int(req.lease / time.Second)
	if h != nil {
		c.enq[req.key] = &waiter{c: c, e: e, lease: req.lease, granted: h, atOnce: true}
		return s.grantReply(req.cmd, wire.StatusAcquired, h.token, secs)
	}
	w := &waiter{c: c, lease: req.lease, ready: make(chan struct{})}
	e.enqueue(w)
	c.enq[req.key] = w
	return reply(req.cmd, wire.StatusQueued)
}

// wait is the second phase of e/se, with the real server's outcomes:
//
//   - Granted at enqueue: the same token with a fresh lease, or
//     error_lease_expired if the lease ran out and nothing evicted the
//     holder yet. Once a release, a renew, the sweep or another request's
//     eviction removed that holder, the registration is gone with it:
//     error_not_enqueued.
//   - Queued: the grant when it comes, with a fresh lease. A grant that
//     came before the wait is answered even if its holder has expired
//     meanwhile: resurrected with a fresh lease if not evicted yet, and
//     otherwise answered with a token the server no longer holds.
func (c *conn) wait(req *request) outcome {
	s := c.srv
	s.mu.Lock()
	w := c.enq[req.key]
	if w == nil {
		s.mu.Unlock()
		return reply(req.cmd, wire.StatusErrorNotEnqueued)
	}
	secs := int(w.lease / time.Second)
	if w.atOnce {
		defer s.mu.Unlock()
		delete(c.enq, req.key)
		h := w.granted
		now := time.Now()
		switch {
		case h.gone != held:
			return reply(req.cmd, wire.StatusErrorLeaseExpired)
		case !now.Before(h.expires):
			s.removeHolder(h, goneExpired, now)
			s.promote(h.e, now)
			return reply(req.cmd, wire.StatusErrorLeaseExpired)
		}
		h.expires = now.Add(w.lease)
		h.e.lastActive = now
		return s.grantReply(req.cmd, wire.StatusOK, h.token, secs)
	}
	res := blockTimeout
	if w.granted == nil && req.timeout > 0 {
		s.mu.Unlock()
		res = c.block(w.ready, req.timeout)
		s.mu.Lock()
		if res == blockGone {
			s.mu.Unlock()
			return outcome{gone: true} // closing the connection drops w
		}
	}
	defer s.mu.Unlock()
	// Whatever happens now, the registration is consumed.
	delete(c.enq, req.key)
	now := time.Now()
	w.e.lastActive = now
	if h := w.granted; h != nil {
		if h.gone == held {
			h.expires = now.Add(w.lease)
		}
		return s.grantReply(req.cmd, wire.StatusOK, h.token, secs)
	}
	w.e.unlink(w)
	if res == blockShutdown {
		return reply(req.cmd, wire.StatusError)
	}
	return reply(req.cmd, wire.StatusTimeout)
}
