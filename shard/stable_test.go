package shard_test

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/shard"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The vectors of PROTOCOL.md, from Python's zlib.crc32.
func TestStableHashProtocolVectors(t *testing.T) {
	cases := []struct {
		key        string
		mod3, mod5 int
	}{
		{"my-key", 2, 2}, {"a", 0, 2}, {"foo", 2, 4}, {"lock-1", 1, 0}, {"🔒", 0, 4}, {"worker-pool", 2, 3},
	}
	for _, c := range cases {
		assert.Equal(t, c.mod3, shard.Index(c.key, 3), c.key)
		assert.Equal(t, c.mod5, shard.Index(c.key, 5), c.key)
	}
}

// TestStableHashPythonVectors checks 1,000+ keys (ASCII, long, non-ASCII,
// emoji) against the indexes python3 computed for n = 1..7; see the header
// of testdata/crc32_vectors.tsv for the command.
func TestStableHashPythonVectors(t *testing.T) {
	f, err := os.Open("testdata/crc32_vectors.tsv")
	require.NoError(t, err)
	defer f.Close()
	servers := []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6"}
	strategies := make([]*shard.StableHash, 8)
	for n := 1; n <= 7; n++ {
		strategies[n], err = shard.NewStableHash(servers[:n])
		require.NoError(t, err)
	}
	sc := bufio.NewScanner(f)
	checked := 0
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		fields := strings.Split(sc.Text(), "\t")
		require.Len(t, fields, 9, sc.Text())
		key := fields[0]
		for n := 1; n <= 7; n++ {
			want, err := strconv.Atoi(fields[1+n])
			require.NoError(t, err)
			require.Equalf(t, want, shard.Index(key, n), "key %q, n=%d", key, n)
			got, err := strategies[n].Server(key)
			require.NoError(t, err)
			require.Equal(t, servers[want], got)
		}
		checked++
	}
	require.NoError(t, sc.Err())
	assert.GreaterOrEqual(t, checked, 1000)
}

func TestStableHashServerOrderMatters(t *testing.T) {
	a, err := shard.NewStableHash([]string{"x:1", "y:1", "z:1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"x:1", "y:1", "z:1"}, a.Servers())
	got, err := a.Server("my-key") // index 2
	require.NoError(t, err)
	assert.Equal(t, "z:1", got)
}

func TestServerListErrors(t *testing.T) {
	for name, servers := range map[string][]string{
		"empty":     nil,
		"blank":     {"a:1", ""},
		"duplicate": {"a:1", "b:1", "a:1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := shard.NewStableHash(servers)
			assert.Error(t, err)
			_, err = shard.NewConsistent(servers, shard.ConsistentConfig{})
			assert.Error(t, err)
			_, err = shard.NewRendezvous(servers)
			assert.Error(t, err)
			_, err = shard.NewFunc(servers, shard.Index)
			assert.Error(t, err)
		})
	}
	_, err := shard.NewStableHash(nil)
	assert.ErrorIs(t, err, shard.ErrNoServers)
	_, err = shard.NewRendezvous([]string{"a", "a"})
	assert.ErrorIs(t, err, shard.ErrBadServers)
}

func TestFunc(t *testing.T) {
	servers := []string{"a:1", "b:1", "c:1"}
	// The Python client's sharding_strategy signature: (key, n) -> index.
	f, err := shard.NewFunc(servers, func(key string, n int) int { return len(key) % n })
	require.NoError(t, err)
	got, err := f.Server("abcd")
	require.NoError(t, err)
	assert.Equal(t, "b:1", got)
	assert.Equal(t, servers, f.Servers())

	bad, err := shard.NewFunc(servers, func(string, int) int { return 3 })
	require.NoError(t, err)
	_, err = bad.Server("k")
	assert.ErrorIs(t, err, shard.ErrBadIndex)
	neg, err := shard.NewFunc(servers, func(string, int) int { return -1 })
	require.NoError(t, err)
	_, err = neg.Server("k")
	assert.ErrorContains(t, err, "-1 for 3 servers")

	_, err = shard.NewFunc(servers, nil)
	assert.Error(t, err)
}

func TestByName(t *testing.T) {
	for _, name := range shard.Names() {
		s, err := shard.ByName(name, []string{"a:1", "b:1"})
		require.NoError(t, err, name)
		got, err := s.Server("k")
		require.NoError(t, err)
		assert.Contains(t, []string{"a:1", "b:1"}, got)
	}
	_, err := shard.ByName("magic", []string{"a:1"})
	assert.ErrorContains(t, err, `unknown strategy "magic"`)
}
