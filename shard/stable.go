package shard

import (
	"fmt"
	"hash/crc32"
	"slices"
)

// StableHash routes a key to servers[crc32_ieee(key) % len(servers)], the
// rule of the Python (zlib.crc32), TypeScript and upstream Go clients. The
// order of the server list is part of the mapping: every client must list
// the same servers in the same order.
type StableHash struct {
	servers []string
}

// NewStableHash returns the default strategy over servers.
func NewStableHash(servers []string) (*StableHash, error) {
	if err := checkServers(servers); err != nil {
		return nil, err
	}
	return &StableHash{servers: slices.Clone(servers)}, nil
}

// Index returns the index of key's server among n, the same number the
// other clients compute.
func Index(key string, n int) int {
	return int(crc32.ChecksumIEEE(keyBytes(key)) % uint32(n))
}

// Server returns the address of the server that owns key.
func (s *StableHash) Server(key string) (string, error) {
	return s.servers[Index(key, len(s.servers))], nil
}

// Servers returns the servers in their routing order.
func (s *StableHash) Servers() []string { return slices.Clone(s.servers) }

// Func routes with a user's function of the key and the number of servers,
// like the Python client's sharding_strategy. The function must be
// deterministic and safe for concurrent use.
type Func struct {
	servers []string
	pick    func(key string, n int) int
}

// NewFunc returns a strategy that routes key to servers[pick(key, n)].
func NewFunc(servers []string, pick func(key string, n int) int) (*Func, error) {
	if err := checkServers(servers); err != nil {
		return nil, err
	}
	if pick == nil {
		return nil, fmt.Errorf("%w: nil function", ErrBadServers)
	}
	return &Func{servers: slices.Clone(servers), pick: pick}, nil
}

// Server returns servers[pick(key, n)], or ErrBadIndex when pick returns an
// index out of range.
func (f *Func) Server(key string) (string, error) {
	i := f.pick(key, len(f.servers))
	if i < 0 || i >= len(f.servers) {
		return "", fmt.Errorf("%w: %d for %d servers", ErrBadIndex, i, len(f.servers))
	}
	return f.servers[i], nil
}

// Servers returns the servers in their routing order.
func (f *Func) Servers() []string { return slices.Clone(f.servers) }
