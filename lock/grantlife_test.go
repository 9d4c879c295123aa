package lock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
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
// that token was released) never touches the handle's new grant. Each
// handle takes its key again and again, each hold ending at the instant
// a renewal falls due, so that releases and renewals cross every way.
// Nothing is ever lost, and no acquire waits: the rounds take exactly
// their holds.
func TestStaleRenewalNeverTouchesANewGrant(t *testing.T) {
	for _, tc := range []struct {
		name           string
		handles, holds int
		lease          time.Duration
		ratio          float64
		hold           time.Duration
	}{
		{"renewing every 10 ms", 20, 300, time.Second, 0.01, 10 * time.Millisecond},
		{"holding past a renewal", 20, 60, 2 * time.Second, 0.5, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newVirtualFleet(t, 1, fakeserver.Config{})
				d, c, _ := watched(t, f, lock.Config{})
				var acquired, lost atomic.Int64
				var wg sync.WaitGroup
				began := time.Now()
				for i := range tc.handles {
					wg.Go(func() {
						l := c.Lock(fmt.Sprintf("%s-%d", uniqueKey(t, "k"), i), lock.LeaseTTL(tc.lease), lock.RenewRatio(tc.ratio))
						for range tc.holds {
							ok, err := l.Acquire(context.Background())
							if !assert.NoError(t, err) || !assert.True(t, ok) {
								return
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
					})
				}
				wg.Wait()
				assert.Equal(t, time.Duration(tc.holds)*tc.hold, time.Since(began))
				assert.Equal(t, int64(tc.handles*tc.holds), acquired.Load())
				assert.Zero(t, lost.Load())
				assert.Positive(t, c.RenewalsSent())
				assert.Zero(t, d.reported.Load(), "no fault, so no loss")
				d.assertNoFalseLoss(t)
			})
		})
	}
}

// readTimeoutConfig is a client configuration with room for a wait
// beside a lock taken after one: two exclusive connections.
var readTimeoutConfig = lock.Config{Pool: pool.Config{MaxConns: 3, SharedConns: 1}}

// acquireAfterWait makes l hold its key through a blocking acquire (so on
// an exclusive connection): other holds the key, and frees it once l has
// waited for pause on the server. In a synctest bubble; the acquire
// returns at the release, exactly pause after it began.
func acquireAfterWait(t *testing.T, srv *fakeserver.Server, other *lock.Client, l *lock.Lock, pause time.Duration) {
	t.Helper()
	first := other.Lock(l.Key())
	mustAcquire(t, first)
	took := make(chan time.Duration, 1)
	go func() {
		began := time.Now()
		ok, err := l.Acquire(context.Background())
		assert.NoError(t, err)
		assert.True(t, ok)
		took <- time.Since(began)
	}()
	synctest.Wait()
	require.Equal(t, 1, waiters(srv, l.Key()), "queued")
	time.Sleep(pause) // the scenario: how long the wait lasts
	require.NoError(t, first.Release(ctxFor(t, wait)))
	assert.Equal(t, pause, <-took)
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

// Item 2: a 30 s wait, past the server's 23 s read timeout, loses
// neither the lock it is granted nor any other lock the client holds,
// and both stay held for minutes after. (The server's read-timeout
// clock does not run while it handles a blocking request.)
func TestLongWaitKeepsEveryLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		d, c, other := watched(t, f, readTimeoutConfig)

		a := c.Lock("a", lock.LeaseTTL(10*time.Second))
		acquireAfterWait(t, srv, other, a, 0)
		aTok := a.Token()

		// A wait past the read timeout, while a is held.
		b := c.Lock("b", lock.LeaseTTL(10*time.Second), lock.AcquireTimeout(time.Minute))
		acquireAfterWait(t, srv, other, b, 30*time.Second)
		bTok := b.Token()
		require.NotEmpty(t, bTok, "granted after a long wait, and held")

		time.Sleep(3 * time.Minute)
		synctest.Wait()
		assert.Equal(t, aTok, a.Token())
		assert.Equal(t, bTok, b.Token())
		for _, l := range []*lock.Lock{a, b} {
			st := srv.TokenState(l.Key(), l.Token())
			assert.True(t, st.Held && st.LeaseLeft > 0, "the server still holds %s", l.Key())
		}
		assert.Zero(t, srv.ReadTimeoutCloses())
		assert.Zero(t, d.reported.Load())
	})
}

// Item 3: a 45 s wait, longer than the 30 s lease, keeps the lock it is
// granted, renewed for minutes after: the server starts the lease at the
// grant, not at the request.
func TestWaitLongerThanTheLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		d, c, other := watched(t, f, lock.Config{})
		l := c.Lock("k", lock.LeaseTTL(30*time.Second), lock.AcquireTimeout(time.Minute))
		acquireAfterWait(t, srv, other, l, 45*time.Second)
		tok := l.Token()
		require.NotEmpty(t, tok)
		time.Sleep(3 * time.Minute) // renewed past its lease, many times
		synctest.Wait()
		assert.Equal(t, tok, l.Token())
		st := srv.TokenState("k", tok)
		assert.True(t, st.Held && st.LeaseLeft > 0)
		assert.Zero(t, d.reported.Load())
	})
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
// never times it out at its 23 s read timeout, however long the caller
// takes to Wait: here, granted at once, and waited for 30 s later,
// within the grant's 33 s lease (the server's default).
func TestQueuedEnqueueOutlivesTheReadTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		d, c, other := watched(t, f, readTimeoutConfig)
		first := other.Lock("k")
		mustAcquire(t, first)

		l := c.Lock("k")
		st, err := l.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
		require.NoError(t, first.Release(ctxFor(t, wait)))
		time.Sleep(30 * time.Second) // the scenario: granted, but Wait comes late
		began := time.Now()
		ok, err := l.Wait(ctxFor(t, wait), time.Second)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Zero(t, time.Since(began), "granted 30 s ago")
		assert.NotEmpty(t, l.Token())
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.True(t, srv.TokenState("k", l.Token()).Held, "renewed since")
		assert.Zero(t, srv.ReadTimeoutCloses())
		assert.Zero(t, d.reported.Load())
	})
}

// A queued Enqueue's grant runs on its lease from the grant, which the
// client learns of only when it Waits: a Wait later than that finds the
// lease over, and says so with an error (not a lock it does not hold);
// nothing stays held.
func TestQueuedGrantOutlivedByItsLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		_, c, other := watched(t, f, readTimeoutConfig)
		first := other.Lock("k")
		mustAcquire(t, first)

		l := c.Lock("k", lock.LeaseTTL(30*time.Second))
		st, err := l.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
		require.NoError(t, first.Release(ctxFor(t, wait)))
		time.Sleep(time.Minute)
		ok, err := l.Wait(ctxFor(t, wait), time.Second)
		assert.ErrorContains(t, err, "does not hold this token")
		assert.False(t, ok)
		assert.Empty(t, l.Token())
		synctest.Wait()
		assert.False(t, keyHeld(srv, "k"))
		ok, err = other.Lock("k").TryAcquire(ctxFor(t, wait))
		require.NoError(t, err)
		assert.True(t, ok)
	})
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
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		d, c, other := watched(t, f, lock.Config{Pool: pool.Config{MaxConns: 3, SharedConns: 1}})
		held := make([]*lock.Lock, 5)
		for i := range held {
			held[i] = c.Lock(fmt.Sprint("k", i), lock.AcquireTimeout(2*time.Second))
			acquireAfterWait(t, srv, other, held[i], time.Second)
		}
		for _, l := range held {
			assert.NotEmpty(t, l.Token())
		}
		st := c.PoolStats()[0]
		assert.Equal(t, 5, st.ParkedConns)
		assert.Zero(t, d.reported.Load())
	})
}
