package shard

import (
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Rendezvous routes each key to the server with the highest weight for it
// (highest-random-weight hashing). Growing from n to n+1 servers moves
// 1/(n+1) of the keys, all to the new server; removing one moves only its
// keys; shares are even without any tuning or shared configuration beyond
// the server addresses. A lookup costs O(n): one hash of the key and one
// mix per server.
//
// The weight of server s for key k is splitmix64(xxhash64(k) ^
// xxhash64(s)); other clients must compute the same to agree.
type Rendezvous struct {
	elastic
}

// NewRendezvous returns a rendezvous-hashing strategy over servers.
func NewRendezvous(servers []string) (*Rendezvous, error) {
	r := &Rendezvous{}
	if err := r.init(servers, newWeights); err != nil {
		return nil, err
	}
	return r, nil
}

// weights is one membership of a Rendezvous, sorted by address so that the
// order servers were given in does not matter.
type weights struct {
	servers []string
	seeds   []uint64
}

func newWeights(servers []string) (Strategy, error) {
	w := weights{servers: slices.Sorted(slices.Values(servers))}
	w.seeds = make([]uint64, len(w.servers))
	for i, s := range w.servers {
		w.seeds[i] = xxhash.Sum64String(s)
	}
	return w, nil
}

func (w weights) Server(key string) (string, error) {
	h := xxhash.Sum64String(key)
	best, bestW := 0, uint64(0)
	for i, seed := range w.seeds {
		if x := mix64(h ^ seed); x > bestW {
			best, bestW = i, x
		}
	}
	return w.servers[best], nil
}

func (w weights) Servers() []string { return slices.Clone(w.servers) }

// mix64 is the splitmix64 finaliser: every input bit flips each output bit
// with probability about 1/2.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
