package fakeserver

import "time"

// Fault injection. Each hook acts at once and is safe for concurrent use.

// DropConnections closes every open connection from the server's side, as a
// network failure would, and returns how many it closed. When it returns,
// their locks have been released (unless auto-release is disabled).
func (s *Server) DropConnections() int { return s.dropAll() }

// Stall holds every request that arrives, or is already queued on a
// connection, for d: no request is handled and no reply written until the
// stall ends or Unstall is called. Leases keep running meanwhile.
func (s *Server) Stall(d time.Duration) {
	s.stallMu.Lock()
	defer s.stallMu.Unlock()
	s.stallUntil = time.Now().Add(d)
}

// Unstall ends a stall early.
func (s *Server) Unstall() {
	s.stallMu.Lock()
	defer s.stallMu.Unlock()
	s.stallUntil = time.Time{}
	close(s.stallLifted)
	s.stallLifted = make(chan struct{})
}

func (s *Server) stallState() (time.Time, <-chan struct{}) {
	s.stallMu.Lock()
	defer s.stallMu.Unlock()
	return s.stallUntil, s.stallLifted
}

// RefuseConnections makes the server accept new connections and close them
// at once without a reply (as a full server does), until called with false.
// Open connections are not affected.
func (s *Server) RefuseConnections(refuse bool) { s.refusing.Store(refuse) }

// Stop simulates the server dying: the listener and every connection close
// and all state is lost. Restart brings it back on the same address.
func (s *Server) Stop() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.stopLocked()
	return nil
}

// Restart listens again on the address of a stopped server, with empty
// state. It is a no-op on a running server.
func (s *Server) Restart() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.ln != nil {
		return nil
	}
	return s.listen()
}

// ExpireNow ends the lease of every holder of key now, granting the freed
// slots to waiters, and returns how many holders it evicted.
func (s *Server) ExpireNow(key string) int {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tab.keys[key]
	if e == nil {
		return 0
	}
	for _, h := range e.holders {
		h.expires = now
	}
	return s.evict(e, now)
}
