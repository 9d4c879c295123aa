package fakeserver

import "time"

// TokenState is the server's view of one grant at one moment.
type TokenState struct {
	Held      bool          // key is held (or a semaphore slot of key) under this token right now
	Conn      uint64        // the connection id that owns it (0 if not held)
	LeaseLeft time.Duration // time until its lease runs out; <= 0 means expired even if not swept yet
	Faulted   bool          // a fault was injected since the grant that could make the client lose it
}

// TokenState reports what the server knows of token on key now. It is the
// oracle for false losses: a client that reports losing a grant the server
// still holds (Held, LeaseLeft > 0) with no fault since (!Faulted) dropped
// it wrongly.
//
// Faulted is true when, since the grant, DropConnections, Stop, Restart,
// RefuseConnections(true) or Stall was called on this server, or a stall
// or a refusal was in force at the grant or still is, or ExpireNow evicted
// this very grant. It is remembered for a token removed after such a fault
// (released, expired, dropped, or forgotten by Stop); of the other tokens
// the server no longer holds, it knows nothing and reports all false.
// Conn is the server-side id of the connection that acquired the grant
// (as in the stats document's owner_conn_id); with auto-release disabled
// that connection may be closed already.
func (s *Server) TokenState(key, token string) TokenState {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.tab.keys[key]; e != nil {
		if h := e.find(token); h != nil {
			return TokenState{Held: true, Conn: h.ownerID, LeaseLeft: h.expires.Sub(now), Faulted: s.faultedLocked(h)}
		}
	}
	return TokenState{Faulted: s.lost.has(key, token)}
}

// FaultCount returns how many faults were injected: calls of every fault
// hook but Unstall and RefuseConnections(false) (Restart of a running
// server is no fault).
func (s *Server) FaultCount() uint64 { return s.faults.Load() }

// faultedLocked reports whether a fault may have cost h's client the grant.
// It runs on every removal, so it must stay cheap.
func (s *Server) faultedLocked(h *holder) bool {
	// A stall or refusal that began after the grant moved the epoch; one
	// that began before and overlaps the hold was in force at the grant.
	return h.epoch != s.epoch || h.disrupted
}

func (s *Server) noteLostLocked(h *holder) { s.lost.add(h.e.key, h.token) }

// lostTokens remembers faulted grants the server no longer holds, in two
// generations of lostGeneration each, so a long run's memory stays bounded.
type lostTokens struct {
	cur, old map[tokenRef]struct{}
}

type tokenRef struct{ key, token string }

const lostGeneration = 1 << 16

func (l *lostTokens) add(key, token string) {
	if len(l.cur) >= lostGeneration || l.cur == nil {
		l.old, l.cur = l.cur, make(map[tokenRef]struct{})
	}
	l.cur[tokenRef{key, token}] = struct{}{}
}

func (l *lostTokens) has(key, token string) bool {
	ref := tokenRef{key, token}
	_, ok := l.cur[ref]
	if !ok {
		_, ok = l.old[ref]
	}
	return ok
}
