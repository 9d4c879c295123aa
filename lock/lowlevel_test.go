package lock_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

func dialLow(t *testing.T, addr string) *lock.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, wait)
	require.NoError(t, err)
	c := lock.NewConn(nc)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestLowLevel(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	ctx := ctxFor(t, wait)
	a, b := dialLow(t, f.addrs[0]), dialLow(t, f.addrs[0])
	key := uniqueKey(t, "k")

	tok, lease, err := a.Acquire(ctx, key, 10*time.Second, 20*time.Second)
	require.NoError(t, err)
	assert.Len(t, tok, 32)
	assert.Equal(t, 20*time.Second, lease)
	_, _, err = b.Acquire(ctx, key, 0, 0)
	assert.ErrorIs(t, err, lock.ErrTimeout)

	lease, err = b.Renew(ctx, key, tok, 25*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 25*time.Second, lease)

	st, _, _, err := b.Enqueue(ctx, key, 0)
	require.NoError(t, err)
	assert.Equal(t, lock.Queued, st)
	require.NoError(t, a.Release(ctx, key, tok))
	tok2, _, err := b.Wait(ctx, key, 5*time.Second)
	require.NoError(t, err)
	assert.NotEqual(t, tok, tok2)
	require.NoError(t, b.Release(ctx, key, tok2))
	assert.ErrorIs(t, b.Release(ctx, key, tok2), lock.ErrServer)

	st, tok3, lease, err := a.Enqueue(ctx, key, 9*time.Second)
	require.NoError(t, err)
	assert.Equal(t, lock.Acquired, st)
	assert.Equal(t, 9*time.Second, lease)
	tok4, _, err := a.Wait(ctx, key, 0)
	require.NoError(t, err)
	assert.Equal(t, tok3, tok4)
	_, _, err = a.Wait(ctx, key, 0)
	assert.ErrorIs(t, err, lock.ErrNotEnqueued)

	sem := key + "-sem"
	s1, _, err := a.SemAcquire(ctx, sem, 2, 0, 0)
	require.NoError(t, err)
	_, _, err = b.SemAcquire(ctx, sem, 2, 0, 0)
	require.NoError(t, err)
	_, _, err = b.SemAcquire(ctx, sem, 3, 0, 0)
	assert.ErrorIs(t, err, lock.ErrLimitMismatch)
	_, err = a.SemRenew(ctx, sem, s1, 0)
	require.NoError(t, err)
	st, _, _, err = a.SemEnqueue(ctx, sem, 2, 0)
	require.NoError(t, err)
	assert.Equal(t, lock.Queued, st)
	require.NoError(t, a.SemRelease(ctx, sem, s1))
	_, _, err = a.SemWait(ctx, sem, time.Second)
	require.NoError(t, err)

	stats, err := a.Stats(ctx)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, stats.Connections, 2)
}

func TestLowLevelCancelledCallSpoilsTheConnection(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	a, b := dialLow(t, f.addrs[0]), dialLow(t, f.addrs[0])
	key := uniqueKey(t, "k")
	_, _, err := a.Acquire(ctxFor(t, wait), key, 0, 0)
	require.NoError(t, err)
	_, _, err = b.Acquire(ctxFor(t, 100*time.Millisecond), key, 5*time.Second, 0)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	_, _, err = b.Acquire(ctxFor(t, wait), key+"2", 0, 0)
	assert.ErrorContains(t, err, "out of step", "a cut-short call leaves the connection unusable")
}

func TestLowLevelAuth(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{AuthToken: "s3cret"})
	f.server(t, 0)
	good := dialLow(t, f.addrs[0])
	require.NoError(t, good.Auth(ctxFor(t, wait), "s3cret"))
	_, _, err := good.Acquire(ctxFor(t, wait), "k", 0, 0)
	require.NoError(t, err)
	bad := dialLow(t, f.addrs[0])
	assert.ErrorIs(t, bad.Auth(ctxFor(t, wait), "nope"), lock.ErrAuth)

	c := f.client(t, lock.Config{Pool: pool.Config{AuthToken: "s3cret"}})
	ok, err := c.Lock("k2").TryAcquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.True(t, ok)
}

// TestLowLevelRefusesNegativeDurations: rounded up to whole seconds, a
// negative timeout became a try-lock and a negative lease "-1"; neither
// is sent now, and the connection stays usable.
func TestLowLevelRefusesNegativeDurations(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	ctx := ctxFor(t, wait)
	c := dialLow(t, f.addrs[0])
	key := uniqueKey(t, "k")

	_, _, err := c.Acquire(ctx, key, -500*time.Millisecond, 0)
	assert.ErrorIs(t, err, lock.ErrInvalid)
	assert.ErrorContains(t, err, `invalid timeout "-500ms": must not be negative`)
	_, _, err = c.Acquire(ctx, key, 0, -2*time.Second)
	assert.ErrorContains(t, err, `invalid lease "-2s": must not be negative`)
	_, _, _, err = c.SemEnqueue(ctx, key, 2, -time.Second)
	assert.ErrorIs(t, err, lock.ErrInvalid)
	_, _, err = c.Wait(ctx, key, -time.Second)
	assert.ErrorIs(t, err, lock.ErrInvalid)
	_, err = c.Renew(ctx, key, "0123456789abcdef0123456789abcdef", -time.Second)
	assert.ErrorIs(t, err, lock.ErrInvalid)

	tok, lease, err := c.Acquire(ctx, key, 0, 0)
	require.NoError(t, err, "nothing was sent: the connection is still in step")
	assert.Equal(t, 33*time.Second, lease)
	require.NoError(t, c.Release(ctx, key, tok))
}
