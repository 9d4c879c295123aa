package shard

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// ConsistentConfig tunes a Consistent ring. Every client of a fleet must
// use the same values (and the same server addresses, spelled the same
// way), or they will disagree on where keys live.
type ConsistentConfig struct {
	// LoadFactor bounds each server's share of the partitions (and so,
	// with many keys, of the keys) at LoadFactor times the mean. Default
	// 1.25; at least 1.
	LoadFactor float64
	// PartitionCount is how many partitions keys hash into; partitions,
	// not keys, are what the ring assigns to servers. More partitions give
	// finer balance. Default 7919; at least the number of servers.
	PartitionCount int
	// ReplicationFactor is how many points each server has on the ring.
	// More points give smoother shares and fewer moved keys, at the cost
	// of building the ring (30 ms for 32 servers at the default). Default
	// 500.
	ReplicationFactor int
}

func (c *ConsistentConfig) setDefaults() error {
	if c.LoadFactor == 0 {
		c.LoadFactor = 1.25
	}
	if c.PartitionCount == 0 {
		c.PartitionCount = 7919
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = 500
	}
	// The ring library panics on a load under 1 or an empty ring of
	// points ("not enough room to distribute partitions"); refuse both.
	switch {
	case math.IsNaN(c.LoadFactor) || c.LoadFactor < 1:
		return fmt.Errorf("%w: LoadFactor %v must be at least 1", errConfig, c.LoadFactor)
	case c.PartitionCount < 1:
		return fmt.Errorf("%w: PartitionCount %d must be positive", errConfig, c.PartitionCount)
	case c.ReplicationFactor < 1:
		return fmt.Errorf("%w: ReplicationFactor %d must be positive", errConfig, c.ReplicationFactor)
	}
	return nil
}

var errConfig = errors.New("shard: invalid consistent-hashing config")

// Consistent routes keys with consistent hashing with bounded loads
// (github.com/buraksezer/consistent, hashed with xxhash). When a server
// joins, about 1/(n+1) of the keys move to it; when one leaves, only its
// keys move. Add and Remove are the only ways membership changes.
type Consistent struct {
	elastic
}

// NewConsistent builds a ring over servers.
func NewConsistent(servers []string, cfg ConsistentConfig) (*Consistent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Consistent{}
	err := c.init(servers, func(servers []string) (Strategy, error) {
		// The ring library panics when it cannot place every partition;
		// with LoadFactor >= 1 there is always room. A server that gets no
		// partition would silently own no key: refuse that too.
		if len(servers) > cfg.PartitionCount {
			return nil, fmt.Errorf("%w: %d servers but only %d partitions; some servers would own nothing", errConfig, len(servers), cfg.PartitionCount)
		}
		members := make([]consistent.Member, len(servers))
		for i, s := range servers {
			members[i] = member(s)
		}
		r := consistent.New(members, consistent.Config{
			Hasher:            xxHasher{},
			PartitionCount:    cfg.PartitionCount,
			ReplicationFactor: cfg.ReplicationFactor,
			Load:              cfg.LoadFactor,
		})
		if owning := len(r.LoadDistribution()); owning < len(servers) {
			return nil, fmt.Errorf("%w: only %d of %d servers own a partition with PartitionCount %d; raise it", errConfig, owning, len(servers), cfg.PartitionCount)
		}
		return newRing(r, servers), nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

type member string

func (m member) String() string { return string(m) }

type xxHasher struct{}

func (xxHasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// ring is one membership of a Consistent. succ lists the members in the
// order the ring library's GetClosestN walks them (by the xxhash of their
// addresses), and at gives each member's place in it, so that a key's
// replicas cost no hashing of members and no allocation but the result.
type ring struct {
	c    *consistent.Consistent
	succ []string
	at   map[string]int
}

func newRing(c *consistent.Consistent, servers []string) ring {
	succ := slices.Clone(servers)
	slices.SortFunc(succ, func(a, b string) int { return cmp.Compare(xxhash.Sum64String(a), xxhash.Sum64String(b)) })
	at := make(map[string]int, len(succ))
	for i, s := range succ {
		at[s] = i
	}
	return ring{c: c, succ: succ, at: at}
}

func (r ring) Server(key string) (string, error) {
	return r.c.LocateKey(keyBytes(key)).String(), nil
}

func (r ring) Servers() []string {
	ms := r.c.GetMembers()
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.String()
	}
	slices.Sort(out)
	return out
}
