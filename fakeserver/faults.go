package fakeserver

import "time"

// Fault injection. Each hook acts at once and is safe for concurrent use.
// Every call of a hook (but Unstall and RefuseConnections(false)) counts in
// FaultCount, and TokenState reports the grants it may have cost a client.

// DropConnections closes every open connection from the server's side, as a
// network failure would, and returns how many it closed. When it returns,
// their locks have been released (unless auto-release is disabled).
func (s *Server) DropConnections() int {
	s.mu.Lock()
	s.faultLocked()
	// A grant made while the connections close, on one about to close,
	// is disrupted: its client may lose it before the server notes the
	// release.
	s.dropping++
	s.mu.Unlock()
	n := s.dropAll()
	s.mu.Lock()
	s.dropping--
	s.mu.Unlock()
	return n
}

// Stall holds every request that arrives, or is already queued on a
// connection, for d: no request is handled and no reply written until the
// stall ends or Unstall is called. Leases keep running meanwhile. A new
// stall replaces one in force.
func (s *Server) Stall(d time.Duration) {
	now := time.Now()
	s.mu.Lock()
	s.faultLocked()
	// A grant before the stall ends is made during it (one before it
	// began is told by the epoch).
	s.stallEnd = now.Add(max(d, 0))
	s.mu.Unlock()

	s.stallMu.Lock()
	defer s.stallMu.Unlock()
	s.stallUntil = now.Add(d)
}

// Unstall ends a stall early.
func (s *Server) Unstall() {
	s.stallMu.Lock()
	s.stallUntil = time.Time{}
	close(s.stallLifted)
	s.stallLifted = make(chan struct{})
	s.stallMu.Unlock()

	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stallEnd.After(now) {
		s.stallEnd = now
	}
}

func (s *Server) stallState() (time.Time, <-chan struct{}) {
	s.stallMu.Lock()
	defer s.stallMu.Unlock()
	return s.stallUntil, s.stallLifted
}

// RefuseConnections makes the server accept new connections and close them
// at once without a reply (as a full server does), until called with false.
// Open connections are not affected.
func (s *Server) RefuseConnections(refuse bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if refuse {
		s.faultLocked()
	}
	s.refusing.Store(refuse)
}

// Stop simulates the server dying: the listener and every connection close
// and all state is lost. Restart brings it back on the same address.
func (s *Server) Stop() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return ErrClosed
	}
	// As in DropConnections: a grant made while the connections close,
	// on one about to close, is disrupted. Without it a client that lost
	// such a grant (its connection closed) was counted a false loss, the
	// table not yet forgotten when the oracle looked.
	s.mu.Lock()
	s.faultLocked()
	s.dropping++
	s.mu.Unlock()
	s.stopLocked()
	s.mu.Lock()
	s.dropping--
	s.mu.Unlock()
	return nil
}

// Restart listens again on the address of a stopped server (Stop, or a
// finished Shutdown), with empty state. It is a no-op on a running server.
func (s *Server) Restart() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed && s.drained {
		s.closed, s.drained = false, false
		s.bgStop, s.bgDone, s.stopping = make(chan struct{}), make(chan struct{}), make(chan struct{})
		if err := s.listen(); err != nil {
			s.closed, s.drained = true, true
			return err
		}
		go s.background()
		return nil
	}
	if s.closed {
		return ErrClosed
	}
	if s.ln != nil {
		return nil
	}
	s.fault()
	return s.listen()
}

// ExpireNow ends the lease of every holder of key now, granting the freed
// slots to waiters, and returns how many holders it evicted. It is a fault
// for those holders only.
func (s *Server) ExpireNow(key string) int {
	s.faults.Add(1)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tab.keys[key]
	if e == nil {
		return 0
	}
	for _, h := range e.holders {
		h.expires = now
		s.noteLostLocked(h)
	}
	return s.evict(e, now)
}

// fault counts a fault that may hit every holder of the server.
// NoteFault records a fault injected outside the server, such as a
// network partition by a proxy in front of it: the server itself goes on
// as before, but TokenState then excuses a client for giving up a grant
// made before it, as for the other hooks.
func (s *Server) NoteFault() { s.fault() }

func (s *Server) fault() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultLocked()
}

func (s *Server) faultLocked() {
	s.faults.Add(1)
	s.epoch++
}
