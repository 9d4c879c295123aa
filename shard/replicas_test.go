package shard_test

import (
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
