package shard_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/shard"
)

func TestTransitionRoutes(t *testing.T) {
	three := []string{"a:1", "b:1", "c:1"}
	four := []string{"a:1", "b:1", "c:1", "d:1"}
	for _, name := range shard.Names() {
		from, err := shard.ByName(name, three)
		require.NoError(t, err)
		to, err := shard.ByName(name, four)
		require.NoError(t, err)
		tr, err := shard.NewTransition(from, to)
		require.NoError(t, err)
		assert.Equal(t, four, tr.Servers())
		for _, n := range []int{1, 3} {
			keys := make([]string, 500)
			for i := range keys {
				keys[i] = fmt.Sprintf("key-%d", i)
			}
			moves, err := shard.ReplicaMoves(keys, from, to, n)
			require.NoError(t, err)
			moved := map[string]shard.ReplicaMove{}
			for _, m := range moves {
				moved[m.Key] = m
			}
			for _, k := range keys {
				routes, err := tr.Routes(k, n)
				require.NoError(t, err)
				m, ok := moved[k]
				if !ok {
					// Unmoved: one route, the same as either membership's.
					require.Len(t, routes, 1, "%s %s", name, k)
					want, _ := shard.Replicas(from, k, n)
					assert.Equal(t, want, routes[0])
					continue
				}
				require.Len(t, routes, 2, "%s %s", name, k)
				assert.Equal(t, m.From, routes[0], "the old servers first")
				assert.Equal(t, m.To, routes[1])
			}
		}
	}
	// Shrinking is the same in reverse.
	tr, err := shard.NewTransition(must(shard.NewRendezvous([]string{"a:1", "b:1", "c:1", "d:1"})), must(shard.NewRendezvous([]string{"a:1", "b:1", "c:1"})))
	require.NoError(t, err)
	for i := range 200 {
		k := fmt.Sprintf("k%d", i)
		routes, err := tr.Routes(k, 1)
		require.NoError(t, err)
		if owner, _ := tr.From().Server(k); owner == "d:1" {
			// A key of the server leaving: taken there first, then on
			// its new owner.
			require.Len(t, routes, 2)
			assert.Equal(t, []string{"d:1"}, routes[0])
			assert.NotEqual(t, "d:1", routes[1][0])
		} else {
			assert.Len(t, routes, 1, "rendezvous moves only the keys of the server that leaves")
		}
	}
	_, err = shard.NewTransition(nil, tr.To())
	assert.Error(t, err)
}

func TestTransitionIsAStrategy(t *testing.T) {
	from := must(shard.NewStableHash([]string{"a:1", "b:1", "c:1"}))
	to := must(shard.NewStableHash([]string{"a:1", "b:1", "c:1", "d:1"}))
	tr, err := shard.NewTransition(from, to)
	require.NoError(t, err)
	var s shard.Replicator = tr
	for i := range 100 {
		k := fmt.Sprintf("k%d", i)
		got, err := s.Server(k)
		require.NoError(t, err)
		want, _ := to.Server(k)
		assert.Equal(t, want, got, "a key goes where it is headed")
		o1, o2, err := tr.Owners(k)
		require.NoError(t, err)
		routes, _ := tr.Routes(k, 1)
		if o1 == o2 {
			assert.Equal(t, [][]string{{o1}}, routes)
		} else {
			assert.Equal(t, [][]string{{o1}, {o2}}, routes)
		}
		reps, err := s.Replicas(k, 3)
		require.NoError(t, err)
		wantReps, _ := shard.Replicas(to, k, 3)
		assert.Equal(t, wantReps, reps)
	}
	_, err = shard.NewTransition(tr, to)
	assert.ErrorContains(t, err, "finish one before starting the next")
	_, err = shard.NewTransition(nil, to)
	assert.Error(t, err)
}

func TestNameOf(t *testing.T) {
	for _, name := range shard.Names() {
		s, err := shard.ByName(name, []string{"a:1", "b:1"})
		require.NoError(t, err)
		assert.Equal(t, name, shard.NameOf(s))
	}
	f, err := shard.NewFunc([]string{"a:1"}, func(string, int) int { return 0 })
	require.NoError(t, err)
	assert.Empty(t, shard.NameOf(f))
}
