package shard_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/shard"
)

const propertyKeys = 100_000

func keySet(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	return keys
}

func fleet(n int) []string {
	servers := make([]string, n)
	for i := range servers {
		servers[i] = fmt.Sprintf("10.0.%d.%d:6388", i/250, i%250+1)
	}
	return servers
}

// movedFraction is the share of keys that change server when the fleet
// grows from n to n+1.
func movedFraction(t *testing.T, keys []string, before, after shard.Strategy) float64 {
	t.Helper()
	moves, err := shard.Moves(keys, before, after)
	require.NoError(t, err)
	return float64(len(moves)) / float64(len(keys))
}

// imbalance is the largest server's share of keys over the mean share.
func imbalance(t *testing.T, keys []string, s shard.Strategy) float64 {
	t.Helper()
	counts := map[string]int{}
	for _, k := range keys {
		srv, err := s.Server(k)
		require.NoError(t, err)
		counts[srv]++
	}
	most := 0
	for _, c := range counts {
		most = max(most, c)
	}
	mean := float64(len(keys)) / float64(len(s.Servers()))
	return float64(most) / mean
}

// elastic strategies, built over a server list.
var elastic = []struct {
	name  string
	build func(servers []string) (shard.Strategy, error)
}{
	{"consistent", func(s []string) (shard.Strategy, error) { return shard.NewConsistent(s, shard.ConsistentConfig{}) }},
	{"rendezvous", func(s []string) (shard.Strategy, error) { return shard.NewRendezvous(s) }},
}

// TestElasticMovesFewKeys: growing from n to n+1 servers moves at most
// 1.3/(n+1) of 100,000 keys; StableHash moves about n/(n+1), checked for
// comparison.
func TestElasticMovesFewKeys(t *testing.T) {
	keys := keySet(propertyKeys)
	for _, n := range []int{3, 8, 32} {
		servers := fleet(n + 1)
		ideal := 1 / float64(n+1)
		for _, e := range elastic {
			t.Run(fmt.Sprintf("%s/%d", e.name, n), func(t *testing.T) {
				before, err := e.build(servers[:n])
				require.NoError(t, err)
				after, err := e.build(servers)
				require.NoError(t, err)
				moved := movedFraction(t, keys, before, after)
				t.Logf("%s n=%d→%d: moved %.4f (ideal %.4f, bound %.4f)", e.name, n, n+1, moved, ideal, 1.3*ideal)
				assert.LessOrEqual(t, moved, 1.3*ideal)
			})
		}
		t.Run(fmt.Sprintf("stable/%d", n), func(t *testing.T) {
			before, err := shard.NewStableHash(servers[:n])
			require.NoError(t, err)
			after, err := shard.NewStableHash(servers)
			require.NoError(t, err)
			moved := movedFraction(t, keys, before, after)
			t.Logf("stable n=%d→%d: moved %.4f (n/(n+1) = %.4f)", n, n+1, moved, float64(n)*ideal)
			assert.InDelta(t, float64(n)*ideal, moved, 0.02)
		})
	}
}

// TestElasticBalance: the busiest server's share of 100,000 keys is at most
// 1.25 times the mean (the default load factor of Consistent).
func TestElasticBalance(t *testing.T) {
	keys := keySet(propertyKeys)
	for _, n := range []int{3, 8, 32} {
		for _, e := range elastic {
			t.Run(fmt.Sprintf("%s/%d", e.name, n), func(t *testing.T) {
				s, err := e.build(fleet(n))
				require.NoError(t, err)
				got := imbalance(t, keys, s)
				t.Logf("%s n=%d: max/mean %.4f (bound 1.25)", e.name, n, got)
				assert.LessOrEqual(t, got, 1.25)
			})
		}
		t.Run(fmt.Sprintf("stable/%d", n), func(t *testing.T) {
			s, err := shard.NewStableHash(fleet(n))
			require.NoError(t, err)
			got := imbalance(t, keys, s)
			t.Logf("stable n=%d: max/mean %.4f", n, got)
			assert.LessOrEqual(t, got, 1.25)
		})
	}
}
