package lock_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/lock"
)

// writeFleet replaces the fleet file at path whole, as an operator's
// tooling should (write aside, rename).
func writeFleet(t *testing.T, path string, f lock.Fleet) {
	t.Helper()
	b, err := json.Marshal(f)
	require.NoError(t, err)
	writeFile(t, path, b)
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, b, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// A client that watches a fleet file goes through a change as the file
// does, its held locks following.
func TestFleetFileDrivesTheChange(t *testing.T) {
	g := newGrown(t, "consistent")
	path := filepath.Join(t.TempDir(), "fleet.json")
	before := lock.Fleet{Strategy: "consistent", Servers: g.f.addrs[:3]}
	writeFleet(t, path, before)
	c := g.f.client(t, lock.Config{FleetFile: path, FleetWatchInterval: 5 * time.Millisecond})
	servers, previous := c.Membership()
	require.Equal(t, g.before.Servers(), servers)
	require.Nil(t, previous)
	moved, _ := g.keys(t, "ff", 10, 1)
	locks := holdAll(t, c, moved)
	inTransition := func() bool { _, p := c.Membership(); return p != nil }

	// A half-written file is ignored.
	writeFile(t, path, []byte(`{"servers": [`))
	writeFleet(t, path, lock.Fleet{Strategy: "consistent", Servers: g.f.addrs, Previous: g.f.addrs[:3]})
	require.Eventually(t, inTransition, wait, time.Millisecond)
	for _, l := range locks {
		require.Eventually(t, func() bool { return len(l.HeldOn()) == 2 }, wait, time.Millisecond)
		assertFollows(t, l, g.transition(t), 1)
	}

	writeFleet(t, path, lock.Fleet{Strategy: "consistent", Servers: g.f.addrs})
	require.Eventually(t, func() bool { return !inTransition() }, wait, time.Millisecond)
	servers, _ = c.Membership()
	assert.Equal(t, g.after.Servers(), servers)
	for _, l := range locks {
		require.Eventually(t, func() bool { return len(l.HeldOn()) == 1 }, wait, time.Millisecond)
		assertFollows(t, l, g.after, 1)
		g.assertHeldOnServers(t, l)
		assert.False(t, gotLost(l.Lost()))
	}
}

// The file can also give a change up, and a client that missed the
// transition still carries its locks across (with a warning).
func TestFollowAbortAndJump(t *testing.T) {
	g := newGrown(t, "stable")
	c := g.client(t, g.before, 1)
	ctx := ctxFor(t, wait)
	moved, _ := g.keys(t, "fj", 5, 1)
	locks := holdAll(t, c, moved)
	now := lock.Fleet{Servers: g.f.addrs[:3]}
	require.NoError(t, c.Follow(ctx, now), "already there")
	require.NoError(t, c.Follow(ctx, lock.Fleet{Servers: g.f.addrs, Previous: g.f.addrs[:3]}))
	_, previous := c.Membership()
	require.NotNil(t, previous)
	require.NoError(t, c.Follow(ctx, now)) // aborted
	_, previous = c.Membership()
	require.Nil(t, previous)
	for _, l := range locks {
		assertFollows(t, l, g.before, 1)
	}
	// Straight to the new membership.
	require.NoError(t, c.Follow(ctx, lock.Fleet{Servers: g.f.addrs}))
	for _, l := range locks {
		assertFollows(t, l, g.after, 1)
		g.assertHeldOnServers(t, l)
	}
	assert.ErrorIs(t, c.Follow(ctx, lock.Fleet{Strategy: "nope", Servers: g.f.addrs}), lock.ErrInvalid)
}

func TestFleetFileErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fleet.json")
	_, err := lock.New(lock.Config{FleetFile: path})
	assert.ErrorContains(t, err, "reading the fleet file")
	for _, bad := range []string{`{"servers": []}`, `{"servers": ["a:1"], "strategy": "ring"}`, `{"servers": ["a:1"], "extra": 1}`, `not json`, `{"servers": ["a:1"], "previous": []}`} {
		writeFile(t, path, []byte(bad))
		_, err := lock.New(lock.Config{FleetFile: path})
		assert.ErrorContains(t, err, path, bad)
		_, err = lock.ReadFleet(path)
		assert.Error(t, err, bad)
	}
	writeFile(t, path, []byte(`{"servers": ["127.0.0.1:1"]}`))
	_, err = lock.New(lock.Config{FleetFile: path, Servers: []string{"127.0.0.1:1"}})
	assert.ErrorIs(t, err, lock.ErrInvalid)
	f, err := lock.ReadFleet(path)
	require.NoError(t, err)
	assert.Equal(t, lock.Fleet{Servers: []string{"127.0.0.1:1"}}, f)
}
