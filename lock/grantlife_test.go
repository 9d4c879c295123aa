package lock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// The lives of grants as the server counts them (issue 10). Each test
// watches every loss with the false-loss detector; with no fault injected,
// any loss at all is a false one.

// Item 1: a renewal answered for an earlier acquisition (refused, since
// that token was released) never touches the handle's new grant.
func TestStaleRenewalNeverTouchesANewGrant(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handles int
		lease   time.Duration
		ratio   float64
		hold    time.Duration
	}{
		{"renewing every 10 ms", 20, time.Second, 0.01, 10 * time.Millisecond},
		{"holding past a renewal", 20, 2 * time.Second, 0.5, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, 1, fakeserver.Config{})
			d, c, _ := watched(t, f, lock.Config{})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			var acquired, lost atomic.Int64
			var wg sync.WaitGroup
			for i := range tc.handles {
				wg.Add(1)
				go func() {
					defer wg.Done()
					l := c.Lock(fmt.Sprintf("%s-%d", uniqueKey(t, "k"), i), lock.LeaseTTL(tc.lease), lock.RenewRatio(tc.ratio))
					for ctx.Err() == nil {
						ok, err := l.Acquire(ctx)
						if err != nil || !ok {
							continue
						}
						acquired.Add(1)
						select {
						case <-time.After(tc.hold):
						case <-l.Lost():
							lost.Add(1)
						}
						if err := l.Release(context.Background()); errors.Is(err, lock.ErrLockLost) {
							lost.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			t.Logf("%d acquisitions, %d lost", acquired.Load(), lost.Load())
			assert.Positive(t, acquired.Load())
			assert.Zero(t, lost.Load())
			assert.Zero(t, d.reported.Load(), "no fault, so no loss")
			d.assertNoFalseLoss(t)
		})
	}
}

// shortReadTimeout is a fleet whose server times out quiet connections
// after 2 s, and the client configuration that knows it (every client of
// such a server needs it).
func shortReadTimeout(t *testing.T) (*testFleet, *fakeserver.Server, lock.Config) {
	f := newFleet(t, 1, fakeserver.Config{ReadTimeout: 2 * time.Second})
	return f, f.server(t, 0), lock.Config{Pool: pool.Config{ServerReadTimeout: 2 * time.Second, MaxConns: 3, SharedConns: 1}}
}

// acquireAfterWait makes l hold its key through a blocking acquire (so on
// an exclusive connection): other holds the key, and frees it once l has
// waited for pause on the server.
func acquireAfterWait(t *testing.T, srv *fakeserver.Server, other *lock.Client, l *lock.Lock, pause time.Duration) {
	t.Helper()
	first := other.Lock(l.Key())
	mustAcquire(t, first)
	got := make(chan bool, 1)
	go func() {
		ok, err := l.Acquire(ctxFor(t, pause+wait))
		assert.NoError(t, err)
		got <- ok
	}()
	require.Eventually(t, func() bool { return waiters(srv, l.Key()) == 1 }, wait, time.Millisecond)
	time.Sleep(pause) // the scenario: how long the wait lasts
	require.NoError(t, first.Release(ctxFor(t, wait)))
	require.True(t, <-got)
}

// waiters returns how many requests wait in key's queue on srv.
func waiters(srv *fakeserver.Server, key string) int {
	for _, li := range srv.Stats().Locks {
		if li.Key == key {
			return li.Waiters
		}
	}
	return 0
}

// watched returns a client whose losses d checks, and another client.
func watched(t *testing.T, f *testFleet, cfg lock.Config) (d *lossDetector, c, other *lock.Client) {
	d = newLossDetector(t, f)
	c = f.client(t, cfg)
	d.watch(c)
	return d, c, f.client(t, cfg)
}

// Item 2: a wait longer than the server's read timeout loses neither the
// lock it is granted nor any other lock the client holds. (The server's
// read-timeout clock does not run while it handles a blocking request.)
func TestLongWaitKeepsEveryLock(t *testing.T) {
	t.Parallel()
	f, srv, cfg := shortReadTimeout(t)
	d, c, other := watched(t, f, cfg)

	a := c.Lock(uniqueKey(t, "a"), lock.LeaseTTL(10*time.Second))
	acquireAfterWait(t, srv, other, a, 0)
	aTok := a.Token()

	// A wait past the read timeout, while a is held.
	b := c.Lock(uniqueKey(t, "b"), lock.LeaseTTL(10*time.Second), lock.AcquireTimeout(10*time.Second))
	acquireAfterWait(t, srv, other, b, 3*time.Second)
	bTok := b.Token()
	require.NotEmpty(t, bTok, "granted after a long wait, and held")

	time.Sleep(time.Second)
	assert.Equal(t, aTok, a.Token())
	assert.Equal(t, bTok, b.Token())
	for _, l := range []*lock.Lock{a, b} {
		st := srv.TokenState(l.Key(), l.Token())
		assert.True(t, st.Held && st.LeaseLeft > 0, "the server still holds %s", l.Key())
	}
	assert.Zero(t, srv.ReadTimeoutCloses())
	assert.Zero(t, d.reported.Load())
}

// Item 3: a wait longer than the lease keeps the lock it is granted: the
// server starts the lease at the grant, not at the request.
func TestWaitLongerThanTheLease(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1, fakeserver.Config{LeaseSweepInterval: 50 * time.Millisecond})
	srv := f.server(t, 0)
	d, c, other := watched(t, f, lock.Config{})
	key := uniqueKey(t, "k")
	l := c.Lock(key, lock.LeaseTTL(time.Second), lock.AcquireTimeout(5*time.Second))
	acquireAfterWait(t, srv, other, l, 1500*time.Millisecond)
	tok := l.Token()
	require.NotEmpty(t, tok)
	time.Sleep(1500 * time.Millisecond) // renewed past its lease
	assert.Equal(t, tok, l.Token())
	st := srv.TokenState(key, tok)
	assert.True(t, st.Held && st.LeaseLeft > 0)
	assert.Zero(t, d.reported.Load())
}

// Item 4: a stats reply longer than 64 KiB is read whole, and asking for
// it costs no held lock.
func TestStatsOfAnyLength(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1, fakeserver.Config{MaxLocks: -1})
	d, c, _ := watched(t, f, lock.Config{})
	pad := strings.Repeat("x", 180)
	held := make([]*lock.Lock, 1000)
	for i := range held {
		held[i] = c.Lock(fmt.Sprintf("%s-%s-%d", uniqueKey(t, "k"), pad, i))
		ok, err := held[i].TryAcquire(ctxFor(t, wait))
		require.NoError(t, err)
		require.True(t, ok)
	}
	for range 3 {
		st := c.Stats(ctxFor(t, wait))
		require.Len(t, st, 1)
		require.NoError(t, st[0].Err)
		assert.Len(t, st[0].Stats.Locks, 1000)
	}
	for _, l := range held {
		assert.NotEmpty(t, l.Token())
	}
	assert.Zero(t, d.reported.Load())
	for _, ps := range c.PoolStats() {
		assert.Zero(t, ps.BrokenConns)
	}
}

// Item 6: a queued Enqueue's connection is kept talking, so the server
// never times it out, however long the caller takes to Wait.
func TestQueuedEnqueueOutlivesTheReadTimeout(t *testing.T) {
	t.Parallel()
	f, srv, cfg := shortReadTimeout(t)
	d, c, other := watched(t, f, cfg)
	key := uniqueKey(t, "k")
	first := other.Lock(key)
	mustAcquire(t, first)

	l := c.Lock(key)
	st, err := l.Enqueue(ctxFor(t, wait))
	require.NoError(t, err)
	require.Equal(t, lock.Queued, st)
	require.NoError(t, first.Release(ctxFor(t, wait)))
	time.Sleep(3 * time.Second) // the scenario: granted, but Wait comes late
	ok, err := l.Wait(ctxFor(t, wait), time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	assert.NotEmpty(t, l.Token())
	assert.Zero(t, srv.ReadTimeoutCloses())
	assert.Zero(t, d.reported.Load())
}

// Item 7: closing the client while acquisitions are in flight is safe
// (the race detector watches), and leaves nothing held.
func TestCloseRacesAcquire(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	srv := f.server(t, 0)
	for range 5 {
		c, err := lock.New(lock.Config{Servers: f.addrs})
		require.NoError(t, err)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; ; j++ {
					l := c.Lock(fmt.Sprintf("%s-%d-%d", uniqueKey(t, "k"), i, j%3))
					ok, err := l.Acquire(context.Background())
					if err != nil {
						assert.ErrorIs(t, err, lock.ErrClosed, "an acquire cut short by Close says so")
						return
					}
					if ok {
						_ = l.Release(context.Background())
					}
				}
			}()
		}
		require.Eventually(t, func() bool { return len(srv.Stats().Locks) > 0 }, wait, time.Millisecond)
		require.NoError(t, c.Close())
		wg.Wait()
		require.Eventually(t, func() bool { return len(srv.Stats().Locks) == 0 }, wait, time.Millisecond, "nothing left held")
	}
}

// Locks taken after a wait keep their connections, but not the slots
// that waits need: a client whose pool has room for two waits at once
// holds four such locks and can still wait for a fifth.
func TestLocksHeldAfterWaitsDoNotStarveWaits(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	srv := f.server(t, 0)
	d, c, other := watched(t, f, lock.Config{Pool: pool.Config{MaxConns: 3, SharedConns: 1}})
	held := make([]*lock.Lock, 5)
	for i := range held {
		held[i] = c.Lock(fmt.Sprintf("%s-%d", uniqueKey(t, "k"), i), lock.AcquireTimeout(2*time.Second))
		acquireAfterWait(t, srv, other, held[i], 0)
	}
	for _, l := range held {
		assert.NotEmpty(t, l.Token())
	}
	st := c.PoolStats()[0]
	assert.Equal(t, 5, st.ParkedConns)
	assert.Zero(t, d.reported.Load())
}
