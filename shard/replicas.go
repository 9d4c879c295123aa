package shard

import (
	"errors"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// Replicator is a Strategy that can map a key to more than one server:
// the key's replicas, most preferred first, the first being Server(key).
// Every client that lists the same servers computes the same replicas.
type Replicator interface {
	Strategy
	// Replicas returns n distinct servers for key, Server(key) first.
	Replicas(key string, n int) ([]string, error)
}

// ErrTooFewServers: more replicas were asked for than there are servers.
var ErrTooFewServers = errors.New("shard: more replicas than servers")

// Replicas returns key's n replicas under s: Server(key) alone for n = 1,
// whatever s is; for more, s must be a Replicator (every strategy of this
// package is).
func Replicas(s Strategy, key string, n int) ([]string, error) {
	if n == 1 {
		srv, err := s.Server(key)
		if err != nil {
			return nil, err
		}
		return []string{srv}, nil
	}
	r, ok := s.(Replicator)
	if !ok {
		return nil, fmt.Errorf("shard: %T cannot place a key on %d replicas", s, n)
	}
	return r.Replicas(key, n)
}

func checkReplicas(n, servers int) error {
	switch {
	case n < 1:
		return fmt.Errorf("shard: %d replicas: at least 1", n)
	case n > servers:
		return fmt.Errorf("%w: %d replicas of %d servers", ErrTooFewServers, n, servers)
	}
	return nil
}

// inListOrder returns servers[first] and the n-1 servers after it in list
// order, wrapping around.
func inListOrder(servers []string, first, n int) []string {
	out := make([]string, n)
	for j := range out {
		out[j] = servers[(first+j)%len(servers)]
	}
	return out
}

// Replicas returns key's server and the n-1 servers after it in list
// order, wrapping around: for crc32(key) % N = i, servers i, i+1, ...
func (s *StableHash) Replicas(key string, n int) ([]string, error) {
	if err := checkReplicas(n, len(s.servers)); err != nil {
		return nil, err
	}
	return inListOrder(s.servers, Index(key, len(s.servers)), n), nil
}

// Replicas returns servers[pick(key, N)] and the n-1 servers after it in
// list order, wrapping around.
func (f *Func) Replicas(key string, n int) ([]string, error) {
	if err := checkReplicas(n, len(f.servers)); err != nil {
		return nil, err
	}
	i := f.pick(key, len(f.servers))
	if i < 0 || i >= len(f.servers) {
		return nil, fmt.Errorf("%w: %d for %d servers", ErrBadIndex, i, len(f.servers))
	}
	return inListOrder(f.servers, i, n), nil
}

// Replicas returns the n servers of the current membership that the
// strategy ranks first for key.
func (e *elastic) Replicas(key string, n int) ([]string, error) {
	return Replicas(e.cur.Load().Strategy, key, n)
}

// Replicas returns the n servers with the highest weights for key, highest
// first. Removing a server moves each of its keys to the next replica.
func (w weights) Replicas(key string, n int) ([]string, error) {
	if err := checkReplicas(n, len(w.servers)); err != nil {
		return nil, err
	}
	h := xxhash.Sum64String(key)
	// The top n by insertion, best first: n is small, and sorting every
	// server's weight cost 1.6 µs and two allocations at 32 servers.
	var small [8]uint64
	ws := small[:0]
	if n > len(small) {
		ws = make([]uint64, 0, n)
	}
	out := make([]string, 0, n)
	for i, seed := range w.seeds {
		x := mix64(h ^ seed)
		if len(ws) == n && x <= ws[n-1] {
			continue // ties go to the lower address, as in Server
		}
		j := len(ws)
		for j > 0 && x > ws[j-1] {
			j--
		}
		if len(ws) < n {
			ws, out = append(ws, 0), append(out, "")
		}
		copy(ws[j+1:], ws[j:len(ws)-1])
		copy(out[j+1:], out[j:len(out)-1])
		ws[j], out[j] = x, w.servers[i]
	}
	return out, nil
}

// Replicas returns the owner of key's partition and the next n-1 distinct
// members on the ring, by the xxhash of their addresses, as the ring
// library's GetClosestN walks them.
func (r ring) Replicas(key string, n int) ([]string, error) {
	if err := checkReplicas(n, len(r.succ)); err != nil {
		return nil, err
	}
	return inListOrder(r.succ, r.at[r.c.LocateKey(keyBytes(key)).String()], n), nil
}
