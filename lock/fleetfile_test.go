package lock_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
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
// does, its held locks following. In virtual time, the file is read once
// a second, to the nanosecond: a change is seen at the first read after
// it, not before; a half-written file is ignored.
func TestFleetFileDrivesTheChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newVirtualGrown(t, "consistent")
		path := filepath.Join(t.TempDir(), "fleet.json")
		before := lock.Fleet{Strategy: "consistent", Servers: g.f.addrs[:3]}
		writeFleet(t, path, before)
		c := g.f.client(t, lock.Config{FleetFile: path})
		servers, previous := c.Membership()
		require.Equal(t, g.before.Servers(), servers)
		require.Nil(t, previous)
		moved, _ := g.keys(t, "ff", 10, 1)
		locks := holdAll(t, c, moved)
		inTransition := func() bool { _, p := c.Membership(); return p != nil }
		// next waits until just before the file's next read, then past it.
		every := lock.DefaultFleetWatchInterval
		next := func() (before bool) {
			time.Sleep(every - time.Nanosecond)
			synctest.Wait()
			before = inTransition()
			time.Sleep(time.Nanosecond)
			synctest.Wait()
			return before
		}

		writeFile(t, path, []byte(`{"servers": [`))
		next()
		require.False(t, inTransition(), "a half-written file is ignored")
		servers, _ = c.Membership()
		require.Equal(t, g.before.Servers(), servers)

		writeFleet(t, path, lock.Fleet{Strategy: "consistent", Servers: g.f.addrs, Previous: g.f.addrs[:3]})
		require.False(t, next(), "in the transition before the file was read")
		require.True(t, inTransition(), "in the transition at the file's next read")
		for _, l := range locks {
			assert.Len(t, l.HeldOn(), 2)
			assertFollows(t, l, g.transition(t), 1)
		}

		writeFleet(t, path, lock.Fleet{Strategy: "consistent", Servers: g.f.addrs})
		require.True(t, next(), "out of the transition before the file was read")
		require.False(t, inTransition(), "out of the transition at the file's next read")
		servers, _ = c.Membership()
		assert.Equal(t, g.after.Servers(), servers)
		for _, l := range locks {
			assert.Len(t, l.HeldOn(), 1)
			assertFollows(t, l, g.after, 1)
			g.assertHeldOnServers(t, l)
			assert.False(t, gotLost(l.Lost()))
		}
	})
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
