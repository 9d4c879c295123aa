package pool

import "time"

// maintain keeps connections that hold locks talking and closes idle ones
// that hold nothing. It never closes a connection that holds a lock.
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
		if c == nil {
			continue
		}
		if !c.closeIfIdle(now, p.cfg.IdleTimeout) {
			p.keepTalking(c, now)
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
			p.keepTalking(c, now)
			res.ReleaseUnused()
		}
	}
}

// keepTalking sends a no-op on a connection that holds locks and has been
// quiet for KeepAlive, so the server's read timeout never closes it.
func (p *Pool) keepTalking(c *Conn, now time.Time) {
	c.mu.Lock()
	quiet := c.broken == nil && len(c.holds) > 0 && now.Sub(c.lastSent) >= p.cfg.KeepAlive
	c.mu.Unlock()
	if quiet {
		c.sendInternal(&keepAlive)
	}
}

// idle reports whether c holds nothing, awaits nothing and has been unused
// for d.
func (c *Conn) idle(now time.Time, d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idleLocked(now, d)
}

func (c *Conn) idleLocked(now time.Time, d time.Duration) bool {
	return c.broken == nil && len(c.holds) == 0 && c.head == len(c.pending) && now.Sub(c.lastSent) >= d
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
