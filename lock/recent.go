package lock

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/pool"
)

// recentSet remembers, roughly, which keys a client recently found
// taken, so that a replicated acquire of a busy key asks the key's first
// replica alone first (see replicaSet.take). It is a fixed table of
// slots indexed by the key's hash: no growth, no locks. Two keys sharing
// a slot, or a torn read, only cost a round trip or a few requests.
type recentSet struct {
	seed  maphash.Seed
	slots [recentSlots]struct{ hash, at atomic.Uint64 }
}

const (
	recentSlots = 1024
	// recentMemory is how long a key is remembered as busy, and a
	// server as slow.
	recentMemory = 2 * time.Second
)

func newRecentSet() *recentSet {
	return &recentSet{seed: maphash.MakeSeed()}
}

// saw notes key.
func (t *recentSet) saw(key string) {
	h := maphash.String(t.seed, key)
	s := &t.slots[h%recentSlots]
	s.hash.Store(h)
	s.at.Store(uint64(time.Now().UnixNano()))
}

// recent reports whether key was noted within recentMemory.
func (t *recentSet) recent(key string) bool {
	h := maphash.String(t.seed, key)
	s := &t.slots[h%recentSlots]
	return s.hash.Load() == h && time.Since(time.Unix(0, int64(s.at.Load()))) < recentMemory
}

// slowServers tracks the servers that lately did not answer a try-lock
// within Config.ReplicaTimeout (a stalled server, or one cut off): an
// acquire does not wait for their answer, and only one request at a
// time goes to each, as a probe, until one is answered.
type slowServers struct {
	m sync.Map // address → *slowServer
}

type slowServer struct {
	at      atomic.Int64 // when it was last too slow, in Unix nanoseconds; 0 once it answered
	probing atomic.Bool  // a request to it is in flight
	// refusedAt is when it last refused a wait (dflockd draining for
	// shutdown), in Unix nanoseconds; answers do not clear it.
	refusedAt atomic.Int64
	// answeredAt is when it last answered a try-lock or a ping.
	answeredAt atomic.Int64
	marks      atomic.Uint64 // times it was found too slow
}

func (s *slowServers) get(addr string) *slowServer {
	if v, ok := s.m.Load(addr); ok {
		return v.(*slowServer)
	}
	v, _ := s.m.LoadOrStore(addr, &slowServer{})
	return v.(*slowServer)
}

// saw notes that addr did not answer in time.
func (s *slowServers) saw(addr string) { s.get(addr).mark() }

func (st *slowServer) mark() {
	st.at.Store(time.Now().UnixNano())
	st.marks.Add(1)
}

// counts returns how many times each server was found too slow.
func (s *slowServers) counts() map[string]uint64 {
	out := map[string]uint64{}
	s.m.Range(func(k, v any) bool {
		if n := v.(*slowServer).marks.Load(); n > 0 {
			out[k.(string)] = n
		}
		return true
	})
	return out
}

// answered notes that addr answered.
func (s *slowServers) answered(addr string) {
	st := s.get(addr)
	st.at.Store(0)
	st.answeredAt.Store(time.Now().UnixNano())
}

// recent reports whether addr was too slow within recentMemory.
func (s *slowServers) recent(addr string) bool {
	v, ok := s.m.Load(addr)
	return ok && time.Since(time.Unix(0, v.(*slowServer).at.Load())) < recentMemory
}

// check pings addr's server through p, unless another check of it is
// under way, and notes whether it answered within wait.
func (s *slowServers) check(ctx context.Context, addr string, p *pool.Pool, wait time.Duration) {
	st := s.get(addr)
	if time.Since(time.Unix(0, st.answeredAt.Load())) < wait || !st.probing.CompareAndSwap(false, true) {
		return // it answered lately, or is being asked
	}
	defer st.probing.Store(false)
	// By a deadline, not a context's: a deadline's answer on its way in
	// our own process still counts (see pool.ErrNoReply).
	switch err := p.PingBy(ctx, time.Now().Add(wait)); {
	case err == nil:
		s.answered(addr)
	case ctx.Err() == nil:
		st.mark()
	}
}

// refusedWait notes that addr refused a wait.
func (s *slowServers) refusedWait(addr string) {
	s.get(addr).refusedAt.Store(time.Now().UnixNano())
}

// refusesWaits reports whether addr refused a wait within recentMemory.
func (s *slowServers) refusesWaits(addr string) bool {
	v, ok := s.m.Load(addr)
	return ok && time.Since(time.Unix(0, v.(*slowServer).refusedAt.Load())) < recentMemory
}

// send reports whether a request may go to addr now: always, unless it
// is slow, or refuses waits (it is draining for shutdown, and what it
// grants now goes when it exits), and a probe is already out. A true
// answer for a slow server makes the caller the probe (probing): it
// calls done when the probe's request is answered or given up at its
// deadline, never before, so that the server has one of them at a time.
func (s *slowServers) send(addr string) (ok, probing bool, done func()) {
	if !s.recent(addr) && !s.refusesWaits(addr) {
		return true, false, noProbe
	}
	st := s.get(addr)
	if !st.probing.CompareAndSwap(false, true) {
		return false, false, nil
	}
	return true, true, func() { st.probing.Store(false) }
}

// noProbe ends a try-lock that is not a slow server's probe.
func noProbe() {}
