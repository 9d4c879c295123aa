package shard_test

import (
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/shard"
)

// The ring library panics on some inputs; each must be an error at
// configuration time instead.
func TestConsistentEdgeCases(t *testing.T) {
	cases := map[string]struct {
		servers []string
		cfg     shard.ConsistentConfig
	}{
		"empty fleet":                    {nil, shard.ConsistentConfig{}},
		"load factor under 1":            {fleet(3), shard.ConsistentConfig{LoadFactor: 0.9}},
		"NaN load factor":                {fleet(3), shard.ConsistentConfig{LoadFactor: math.NaN()}},
		"negative partitions":            {fleet(3), shard.ConsistentConfig{PartitionCount: -1}},
		"negative replication":           {fleet(3), shard.ConsistentConfig{ReplicationFactor: -5}},
		"more servers than partitions":   {fleet(8), shard.ConsistentConfig{PartitionCount: 7}},
		"duplicate member":               {[]string{"a", "a"}, shard.ConsistentConfig{}},
		"empty address among the others": {[]string{"a", ""}, shard.ConsistentConfig{}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			require.NotPanics(t, func() {
				_, err := shard.NewConsistent(c.servers, c.cfg)
				assert.Error(t, err)
			})
		})
	}

	t.Run("one server owns everything", func(t *testing.T) {
		c, err := shard.NewConsistent([]string{"only:1"}, shard.ConsistentConfig{})
		require.NoError(t, err)
		for _, k := range keySet(100) {
			got, err := c.Server(k)
			require.NoError(t, err)
			require.Equal(t, "only:1", got)
		}
		assert.ErrorIs(t, c.Remove("only:1"), shard.ErrNoServers, "the last server stays")
	})
	t.Run("a server left without partitions", func(t *testing.T) {
		// 7 partitions over 7 servers with load 1.25 lets a server take 2
		// and another none: refused rather than silently unused.
		_, err := shard.NewConsistent(fleet(7), shard.ConsistentConfig{PartitionCount: 7})
		assert.ErrorContains(t, err, "own a partition")
	})
	t.Run("few partitions, every server used", func(t *testing.T) {
		c, err := shard.NewConsistent(fleet(3), shard.ConsistentConfig{PartitionCount: 31})
		require.NoError(t, err)
		owners := map[string]bool{}
		for _, k := range keySet(2000) {
			s, err := c.Server(k)
			require.NoError(t, err)
			owners[s] = true
		}
		assert.Len(t, owners, 3)
	})
	t.Run("a refused change leaves the membership as it was", func(t *testing.T) {
		// With 5 partitions, a fourth server would own none (found by
		// trying; the outcome is deterministic).
		c, err := shard.NewConsistent(fleet(3), shard.ConsistentConfig{PartitionCount: 5})
		require.NoError(t, err)
		before := owners(t, c, keySet(500))
		assert.ErrorContains(t, c.Add("extra:1"), "own a partition")
		assert.Equal(t, fleet(3), c.Servers())
		assert.Equal(t, before, owners(t, c, keySet(500)))
	})
}

type elasticStrategy interface {
	shard.Strategy
	Add(string) error
	Remove(string) error
	PlanAdd(string, []string) ([]shard.Move, error)
	PlanRemove(string, []string) ([]shard.Move, error)
}

func elasticOf(t *testing.T, name string, servers []string) elasticStrategy {
	t.Helper()
	var (
		s   elasticStrategy
		err error
	)
	switch name {
	case "consistent":
		s, err = shard.NewConsistent(servers, shard.ConsistentConfig{})
	default:
		s, err = shard.NewRendezvous(servers)
	}
	require.NoError(t, err)
	return s
}

// TestPlansPredictChanges: the moves a plan reports are exactly the keys
// that change server when the change is applied, each to or from the
// server named.
func TestPlansPredictChanges(t *testing.T) {
	keys := keySet(20_000)
	for _, name := range []string{"consistent", "rendezvous"} {
		t.Run(name, func(t *testing.T) {
			s := elasticOf(t, name, fleet(4))
			before := owners(t, s, keys)

			plan, err := s.PlanAdd("new:1", keys)
			require.NoError(t, err)
			require.NotEmpty(t, plan)
			assert.Equal(t, before, owners(t, s, keys), "planning changes nothing")
			require.NoError(t, s.Add("new:1"))
			assertMoves(t, plan, before, owners(t, s, keys), keys)
			if name == "rendezvous" {
				for _, m := range plan {
					require.Equal(t, "new:1", m.To, "rendezvous moves keys only to the new server")
				}
			}

			before = owners(t, s, keys)
			plan, err = s.PlanRemove(fleet(4)[1], keys)
			require.NoError(t, err)
			require.NoError(t, s.Remove(fleet(4)[1]))
			assertMoves(t, plan, before, owners(t, s, keys), keys)
			for _, m := range plan {
				require.Equal(t, fleet(4)[1], m.From, "removing a server moves only its keys")
			}

			assert.ErrorIs(t, s.Add("new:1"), shard.ErrBadServers)
			assert.ErrorIs(t, s.Remove("absent:1"), shard.ErrBadServers)
			_, err = s.PlanRemove("absent:1", keys)
			assert.Error(t, err)
			assert.Len(t, s.Servers(), 4)
		})
	}
}

func owners(t *testing.T, s shard.Strategy, keys []string) map[string]string {
	t.Helper()
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		srv, err := s.Server(k)
		require.NoError(t, err)
		m[k] = srv
	}
	return m
}

func assertMoves(t *testing.T, plan []shard.Move, before, after map[string]string, keys []string) {
	t.Helper()
	planned := map[string]shard.Move{}
	for _, m := range plan {
		planned[m.Key] = m
	}
	for _, k := range keys {
		m, moved := planned[k]
		if before[k] == after[k] {
			require.False(t, moved, "key %s was planned to move but did not", k)
			continue
		}
		require.True(t, moved, "key %s moved without being planned", k)
		require.Equal(t, shard.Move{Key: k, From: before[k], To: after[k]}, m)
	}
}

// TestMembershipOrderDoesNotMatter: clients that list the same servers in
// another order agree on every key.
func TestMembershipOrderDoesNotMatter(t *testing.T) {
	servers := fleet(5)
	reversed := []string{servers[4], servers[3], servers[2], servers[1], servers[0]}
	keys := keySet(5000)
	for _, name := range []string{"consistent", "rendezvous"} {
		assert.Equal(t, owners(t, elasticOf(t, name, servers), keys), owners(t, elasticOf(t, name, reversed), keys), name)
	}
}

// TestLookupsDuringChanges runs lookups while membership changes (under
// -race): every lookup names a server of the old or the new membership.
func TestLookupsDuringChanges(t *testing.T) {
	for _, name := range []string{"consistent", "rendezvous"} {
		t.Run(name, func(t *testing.T) {
			s := elasticOf(t, name, fleet(3))
			valid := map[string]bool{}
			for _, a := range fleet(4) {
				valid[a] = true
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						srv, err := s.Server(fmt.Sprintf("k%d-%d", g, i))
						if err != nil || !valid[srv] {
							t.Errorf("lookup gave %q, %v", srv, err)
							return
						}
					}
				}()
			}
			for range 5 {
				require.NoError(t, s.Add(fleet(4)[3]))
				require.NoError(t, s.Remove(fleet(4)[3]))
			}
			close(stop)
			wg.Wait()
		})
	}
}
