package testfleet_test

import (
	"context"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testfleet"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A fleet's servers each keep their own locks; a stopped one refuses
// connections until it restarts on its address, and a lease runs out on
// the bubble's clock.
func TestFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := testfleet.Start(t, 3, fakeserver.Config{})
		addrs := f.Addrs()
		require.Len(t, addrs, 3)
		pools := make([]*pool.Pool, len(addrs))
		for i, a := range addrs {
			p, err := pool.New(a, f.Pool(pool.Config{}))
			require.NoError(t, err)
			t.Cleanup(p.Close)
			pools[i] = p
		}
		ctx := t.Context()
		lease := &wire.Request{Cmd: wire.CmdLock, Key: "same-key", Lease: 10}
		for _, p := range pools {
			res, err := p.Do(ctx, lease)
			require.NoError(t, err)
			require.NoError(t, res.Resp.Err(), "each server has its own state")
		}

		require.NoError(t, f.Servers[1].Stop())
		_, err := f.Net.Dial(ctx, "tcp", addrs[1])
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		// The pool tries to release the lock lost with its connection, is
		// refused, and backs off.
		synctest.Wait()
		require.NoError(t, f.Servers[1].Restart())
		time.Sleep(2 * time.Second) // the longest dial backoff
		res, err := pools[1].Do(ctx, lease)
		require.NoError(t, err)
		require.NoError(t, res.Resp.Err(), "a restarted server forgot the lock")

		time.Sleep(8 * time.Second)
		synctest.Wait()
		assert.Empty(t, f.Servers[0].Stats().Locks, "swept when its lease ran out")
		res, err = pools[0].Do(context.Background(), lease)
		require.NoError(t, err)
		require.NoError(t, res.Resp.Err(), "the lease ran out in virtual time")
	})
}
