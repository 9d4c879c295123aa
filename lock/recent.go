package lock

import (
	"hash/maphash"
	"sync/atomic"
	"time"
)

// contentionTable remembers, roughly, which keys a client recently found
// taken, so that a replicated acquire of a busy key asks the key's first
// replica alone first (see replicaSet.take). It is a fixed table of
// slots indexed by the key's hash: no growth, no locks. Two keys sharing
// a slot, or a torn read, only cost a round trip or a few requests.
type contentionTable struct {
	seed  maphash.Seed
	slots [contentionSlots]struct{ hash, at atomic.Uint64 }
}

const (
	contentionSlots = 1024
	// contentionMemory is how long a key is remembered as busy.
	contentionMemory = 2 * time.Second
)

func newContentionTable() *contentionTable {
	return &contentionTable{seed: maphash.MakeSeed()}
}

// saw notes that key was found taken.
func (t *contentionTable) saw(key string) {
	h := maphash.String(t.seed, key)
	s := &t.slots[h%contentionSlots]
	s.hash.Store(h)
	s.at.Store(uint64(time.Now().UnixNano()))
}

// recent reports whether key was found taken within contentionMemory.
func (t *contentionTable) recent(key string) bool {
	h := maphash.String(t.seed, key)
	s := &t.slots[h%contentionSlots]
	return s.hash.Load() == h && time.Since(time.Unix(0, int64(s.at.Load()))) < contentionMemory
}
