package pool

import "time"

// maintain keeps connections that hold locks or enqueue registrations
// talking, and closes idle ones that hold nothing. It never closes a
// connection that holds a lock.
func (p *Pool) maintain() {
	defer close(p.maintDone)
	period := max(min(p.cfg.KeepAlive, p.cfg.IdleTimeout)/4, 10*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			p.tend(now)
		case <-p.closing:
			return
		}
	}
}

func (p *Pool) tend(now time.Time) {
	for i := range p.shared {
		s := &p.shared[i]
		s.mu.Lock()
		c := s.c
		if c != nil && c.idle(now, p.cfg.IdleTimeout) {
			// New callers dial afresh; one that picked c just before gets
			// a "closed" error before anything is sent, and Do retries.
			s.c = nil
		}
		s.mu.Unlock()
		if c != nil {
			c.closeIfIdle(now, p.cfg.IdleTimeout)
		}
	}
	for _, res := range p.excl.AcquireAllIdle() {
		c := res.Value()
		switch {
		case c.Err() != nil:
			res.Destroy()
		case c.closeIfIdle(now, p.cfg.IdleTimeout):
			res.Destroy()
		default:
			res.ReleaseUnused()
		}
	}
	p.freedMu.Lock()
	kept := p.freed[:0]
	var closing []*Conn
	for _, f := range p.freed {
		if now.Sub(f.since) >= p.cfg.IdleTimeout || f.c.Err() != nil {
			closing = append(closing, f.c)
		} else {
			kept = append(kept, f)
		}
	}
	clear(p.freed[len(kept):])
	p.freed = kept
	p.freedMu.Unlock()
	for _, c := range closing {
		c.retire()
	}
	// Every connection, pinned ones included: a connection pinned by a
	// queued enqueue must stay open until its wait, and one that holds
	// locks for as long as it does.
	for _, c := range p.connList() {
		c.keepTalking(now, p.cfg.KeepAlive)
		c.closeIfOverdue(now)
	}
}

// closeIfOverdue closes a connection kept only for answers (a given-up
// wait, or requests a retiring connection still awaits) once they are
// overdue: the server is stuck or gone.
func (c *Conn) closeIfOverdue(now time.Time) {
	c.mu.Lock()
	overdue := false
	if c.draining || c.retiring {
		for _, cl := range c.pending[c.head:] {
			if now.Sub(cl.sent) > time.Duration(cl.req.Timeout)*time.Second+drainSlack {
				overdue = true
			}
		}
	}
	c.mu.Unlock()
	if overdue {
		c.close()
	}
}

// keepTalking sends a no-op on a connection that holds locks or an
// enqueue registration and has been quiet for every, so the server's
// read timeout never closes it. A connection with a request pending needs
// none: the server is handling it, and its clock does not run meanwhile.
func (c *Conn) keepTalking(now time.Time, every time.Duration) {
	c.mu.Lock()
	quiet := c.broken == nil && (len(c.grants) > 0 || len(c.regs) > 0) &&
		c.head == len(c.pending) && now.Sub(c.lastSent) >= every
	if quiet {
		if _, err := c.queueLocked(&keepAlive, true); err != nil {
			c.p.log.Debug("pool: keep-alive not queued", "addr", c.p.addr, "err", err)
		}
	}
	c.mu.Unlock()
}

// idle reports whether c holds nothing, awaits nothing and has been unused
// for d.
func (c *Conn) idle(now time.Time, d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idleLocked(now, d)
}

func (c *Conn) idleLocked(now time.Time, d time.Duration) bool {
	return c.broken == nil && len(c.grants) == 0 && len(c.regs) == 0 && c.head == len(c.pending) && now.Sub(c.lastSent) >= d
}

// closeIfIdle closes c if it is idle, checked under the same lock that
// queues requests, so a request queued meanwhile keeps it open.
func (c *Conn) closeIfIdle(now time.Time, d time.Duration) bool {
	c.mu.Lock()
	idle := c.idleLocked(now, d)
	c.mu.Unlock()
	if idle {
		c.close()
	}
	return idle
}
