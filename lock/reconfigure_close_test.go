package lock_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/shard"
)

// A Reconfigure that Close cuts short says so: it returns ErrClosed, as
// an Acquire in flight at Close does, and as Reconfigure does when
// called after Close. Today it returns nil, as if the client had entered
// the transition with its held locks following, when Close gave them
// back instead (no safety issue: nothing stays held; but an operator's
// rollout reading nil goes on to Commit a client that is gone).
func TestReconfigureCutShortByCloseSaysSo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 3, fakeserver.Config{})
		before, err := shard.NewRendezvous(f.addrs[:2])
		require.NoError(t, err)
		after, err := shard.NewRendezvous(f.addrs)
		require.NoError(t, err)
		// A key that moves to the new server, busy there: the change
		// waits for it.
		key := ""
		for i := 0; key == ""; i++ {
			if k := fmt.Sprint("k", i); slices.Equal(mustReplicas(t, after, k), f.addrs[2:]) {
				key = k
			}
		}
		rawHolder(t, f, 2, key)
		c := f.client(t, lock.Config{Strategy: before})
		mustAcquire(t, c.Lock(key, lock.AcquireTimeout(time.Minute)))
		done := make(chan error, 1)
		go func() { done <- c.Reconfigure(context.Background(), after) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("the change did not wait for the busy key: %v", err)
		default:
		}
		require.NoError(t, c.Close())
		assert.ErrorIs(t, <-done, lock.ErrClosed)
	})
}

func mustReplicas(t *testing.T, s shard.Strategy, key string) []string {
	t.Helper()
	addrs, err := shard.Replicas(s, key, 1)
	require.NoError(t, err)
	return addrs
}
