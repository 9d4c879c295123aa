package shard_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/shard"
)

// TestReplicasProperties: for every strategy, a key's replicas are
// distinct servers of the fleet, Server(key) first, and the first n of
// n+1 replicas are the n replicas.
func TestReplicasProperties(t *testing.T) {
	servers := fleet(5)
	for _, name := range shard.Names() {
		s, err := shard.ByName(name, servers)
		require.NoError(t, err)
		for _, key := range keySet(2000) {
			primary, err := s.Server(key)
			require.NoError(t, err)
			all, err := shard.Replicas(s, key, 5)
			require.NoError(t, err, name)
			require.Len(t, all, 5)
			assert.Equal(t, primary, all[0], "%s: %s", name, key)
			assert.ElementsMatch(t, servers, all, "%s: distinct servers of the fleet", name)
			three, err := shard.Replicas(s, key, 3)
			require.NoError(t, err)
			require.Equal(t, all[:3], three, "%s: %s", name, key)
		}
		_, err = shard.Replicas(s, "k", 6)
		assert.ErrorIs(t, err, shard.ErrTooFewServers, name)
		_, err = shard.Replicas(s, "k", 0)
		assert.Error(t, err, name)
	}
}

// The stable mapping's replicas follow the list from the primary, so any
// client can compute them: my-key's primary is s2 (PROTOCOL.md vector).
func TestStableReplicasFollowTheList(t *testing.T) {
	s, err := shard.NewStableHash([]string{"s0:1", "s1:1", "s2:1"})
	require.NoError(t, err)
	r, err := shard.Replicas(s, "my-key", 3)
	require.NoError(t, err)
	assert.Equal(t, []string{"s2:1", "s0:1", "s1:1"}, r)
	r, err = shard.Replicas(s, "a", 2)
	require.NoError(t, err)
	assert.Equal(t, []string{"s0:1", "s1:1"}, r)
}

// Rendezvous replicas are the ranking itself: without its primary, a key
// goes to its second replica.
func TestRendezvousReplicasAreTheRanking(t *testing.T) {
	servers := fleet(5)
	s, err := shard.NewRendezvous(servers)
	require.NoError(t, err)
	for _, key := range keySet(500) {
		r, err := shard.Replicas(s, key, 3)
		require.NoError(t, err)
		without, err := shard.NewRendezvous(removed(servers, r[0]))
		require.NoError(t, err)
		next, err := shard.Replicas(without, key, 2)
		require.NoError(t, err)
		assert.Equal(t, r[1:3], next, key)
	}
}

// A strategy that is not a Replicator still serves one replica.
func TestReplicasOfAPlainStrategy(t *testing.T) {
	var s shard.Strategy = onlyServer{}
	r, err := shard.Replicas(s, "k", 1)
	require.NoError(t, err)
	assert.Equal(t, []string{"x:1"}, r)
	_, err = shard.Replicas(s, "k", 3)
	assert.ErrorContains(t, err, "cannot place a key on 3 replicas")
}

type onlyServer struct{}

func (onlyServer) Server(string) (string, error) { return "x:1", nil }
func (onlyServer) Servers() []string             { return []string{"x:1"} }

func removed(servers []string, gone string) []string {
	var out []string
	for _, s := range servers {
		if s != gone {
			out = append(out, s)
		}
	}
	return out
}

// The ring's replicas are the ring library's own GetClosestN, computed
// without hashing every member on each lookup.
func TestConsistentReplicasMatchTheRingLibrary(t *testing.T) {
	s, err := shard.NewConsistent(fleet(7), shard.ConsistentConfig{})
	require.NoError(t, err)
	for _, key := range keySet(1000) {
		r, err := shard.Replicas(s, key, 4)
		require.NoError(t, err)
		want, err := shard.LibraryClosestN(s, key, 4)
		require.NoError(t, err)
		assert.Equal(t, want, r, key)
	}
}

func TestReplicaMoves(t *testing.T) {
	three := []string{"a:1", "b:1", "c:1"}
	four := append(slices.Clone(three), "d:1")
	keys := make([]string, 2000)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	for _, name := range shard.Names() {
		before, err := shard.ByName(name, three)
		require.NoError(t, err)
		after, err := shard.ByName(name, four)
		require.NoError(t, err)
		single, err := shard.Moves(keys, before, after)
		require.NoError(t, err)
		moves, err := shard.ReplicaMoves(keys, before, after, 1)
		require.NoError(t, err)
		require.Len(t, moves, len(single), name)
		for i, m := range moves {
			assert.Equal(t, single[i].Key, m.Key)
			assert.Equal(t, []string{single[i].From}, m.From)
			assert.Equal(t, []string{single[i].To}, m.To)
		}
		moves, err = shard.ReplicaMoves(keys, before, after, 3)
		require.NoError(t, err)
		for _, m := range moves {
			assert.ElementsMatch(t, three, m.From, "before, a key lives on all three")
			assert.Contains(t, m.To, "d:1", "a key's set changes only by taking the new server")
		}
		if name != "stable" {
			// Growing by one moves a key's replica set only when the new
			// server is among its first three: about 3/4 of the keys.
			assert.InDelta(t, 0.75, float64(len(moves))/float64(len(keys)), 0.1, name)
		}
	}
	_, err := shard.ReplicaMoves(keys, must(shard.NewStableHash(three)), must(shard.NewStableHash(four)), 4)
	assert.ErrorIs(t, err, shard.ErrTooFewServers)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
