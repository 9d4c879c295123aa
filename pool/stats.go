package pool

// Stats is a snapshot of a pool.
type Stats struct {
	Addr string
	// Conns counts open connections: shared plus exclusive.
	Conns int
	// SharedConns counts open shared (pipelined) connections.
	SharedConns int
	// IdleConns and PinnedConns count exclusive connections.
	IdleConns, PinnedConns int
	// InFlight counts requests written or queued and not yet answered.
	InFlight int
	// Dials counts dial attempts; DialErrors those that failed.
	Dials, DialErrors uint64
	// Requests counts the requests sent to the server (queued for a
	// connection's writer), keep-alives and renewals included: the work
	// the client asks of the server.
	Requests uint64
	// BrokenConns counts connections that broke (not those the pool
	// closed on purpose).
	BrokenConns uint64
	// MalformedReplies counts replies that could not be parsed (each
	// broke its connection).
	MalformedReplies uint64
	// StarvedWaits counts the times a call's deadline passed with its
	// answer on the way in our own process (the request not yet written,
	// or the reply received and not yet read: the process was short of
	// CPU), so that the call waited a little more rather than call the
	// server silent. Many of them say the client, not the server, is
	// slow.
	StarvedWaits uint64
	// Grants counts the locks and slots held through the pool.
	Grants int
	// GrantsPerConn maps connection ID to the locks it holds, for the
	// connections that hold any.
	GrantsPerConn map[uint64]int
	// ParkedConns counts exclusive connections kept out of the pool by
	// the locks they hold (granted after a wait) or by a wait given up
	// and not yet answered (DrainingConns of them). They serve no
	// blocking request until those end, and do not count against
	// MaxConns.
	ParkedConns int
	// DrainingConns counts connections kept for the answer to a wait
	// their caller gave up; a lock granted to it is released at once.
	DrainingConns int
}

// Stats returns a snapshot of the pool.
func (p *Pool) Stats() Stats {
	st := Stats{
		Addr:             p.addr,
		Dials:            p.dials.Load(),
		DialErrors:       p.dialErrors.Load(),
		BrokenConns:      p.broken.Load(),
		MalformedReplies: p.malformed.Load(),
		Requests:         p.requests.Load(),
		StarvedWaits:     p.starvedWaits.Load(),
		GrantsPerConn:    map[uint64]int{},
	}
	conns := p.connList()
	st.Conns = len(conns)
	// Listed shared connections, including one just dialled and not yet
	// in its slot, which is not a pinned one.
	sharedListed := 0
	for _, c := range conns {
		if c.shared {
			sharedListed++
		}
		c.mu.Lock()
		st.InFlight += len(c.pending) - c.head
		if n := len(c.grants); n > 0 {
			st.Grants += n
			st.GrantsPerConn[c.id] = n
		}
		switch {
		case c.owner == ownerKept:
			st.ParkedConns++
		case c.owner == ownerPuddle && !c.shared && c.broken == nil:
			// Counted here, not from puddle, which still lists a
			// broken connection until it is next handed out.
			st.IdleConns++
		}
		if c.draining {
			st.DrainingConns++
		}
		c.mu.Unlock()
	}
	for i := range p.shared {
		s := &p.shared[i]
		s.mu.Lock()
		if s.c != nil && s.c.Err() == nil {
			st.SharedConns++
		}
		s.mu.Unlock()
	}
	st.PinnedConns = max(0, st.Conns-sharedListed-st.IdleConns-st.ParkedConns)
	return st
}
