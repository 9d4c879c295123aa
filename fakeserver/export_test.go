package fakeserver

import "time"

// ProtocolLogInterval is how often the server logs the count of each
// kind of protocol error it did not log line by line.
const ProtocolLogInterval = protocolLogInterval

// PeerState is a test hook: it reports whether the server has the
// connection whose client end is at addr (the client's LocalAddr) open,
// and whether that connection waits in a key's queue (a blocked l/sl, or
// an e/se registration not granted yet). A connection the client closed
// stays open here until the server has noticed and released it.
func (s *Server) PeerState(addr string) (open, waiting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		if c.nc.RemoteAddr().String() != addr {
			continue
		}
		waiting = c.blocked != nil && c.blocked.queued
		for _, w := range c.enq {
			waiting = waiting || w.queued
		}
		return true, waiting
	}
	return false, false
}

// Lapse is a test hook: it ends the lease of key's holder named by token
// (every holder of key when token is empty) now but leaves it in the
// table, as a lease that ran out since the last sweep: the sweep, or the
// next acquire or enqueue on key, would evict it. It returns how many
// holders it touched.
func (s *Server) Lapse(key, token string) int {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.tab.keys[key]
	if e == nil {
		return 0
	}
	n := 0
	for _, h := range e.holders {
		if token == "" || h.token == token {
			h.expires = now
			n++
		}
	}
	return n
}
