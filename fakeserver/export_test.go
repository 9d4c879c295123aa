package fakeserver

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
