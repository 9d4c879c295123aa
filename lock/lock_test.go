package lock_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testlog"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// onTimedFleet runs body, a test whose waits are part of what it shows,
// on a fleet of n servers: fakeservers in a synctest bubble, where a
// wait takes no real time and lasts exactly what it should; or, with
// DFLOCK_TEST_SERVERS, the real servers, in real time.
func onTimedFleet(t *testing.T, n int, cfg fakeserver.Config, body func(t *testing.T, f *testFleet)) {
	t.Helper()
	if os.Getenv("DFLOCK_TEST_SERVERS") != "" {
		body(t, newFleet(t, n, cfg))
		return
	}
	synctest.Test(t, func(t *testing.T) { body(t, newVirtualFleet(t, n, cfg)) })
}

// assertTook asserts that what began at began lasted want: exactly, in
// virtual time; at least want, against real servers, whose waits are
// counted from our request's arrival.
func assertTook(t *testing.T, f *testFleet, want time.Duration, began time.Time, msg string) {
	t.Helper()
	if f.mem != nil {
		assert.Equal(t, want, time.Since(began), msg)
	} else {
		assert.GreaterOrEqual(t, time.Since(began), want, msg)
	}
}

func TestAcquireRelease(t *testing.T) {
	f := newFleet(t, 3, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	l := c.Lock(uniqueKey(t, "k"), lock.LeaseTTL(7*time.Second))
	assert.Equal(t, "", l.Token())
	assert.Zero(t, l.Lease())

	mustAcquire(t, l)
	assert.Regexp(t, "^[0-9a-f]{32}$", l.Token())
	assert.Equal(t, 7*time.Second, l.Lease())

	ok, err := l.Acquire(ctxFor(t, wait))
	assert.ErrorIs(t, err, lock.ErrHeld)
	assert.False(t, ok)

	other := c.Lock(l.Key(), lock.AcquireTimeout(0))
	ok, err = other.Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.False(t, ok, "held by l")

	require.NoError(t, l.Release(ctxFor(t, wait)))
	assert.Equal(t, "", l.Token())
	assert.ErrorIs(t, l.Release(ctxFor(t, wait)), lock.ErrNotHeld)
	select {
	case <-l.Lost():
		t.Fatal("a released lock is not lost")
	default:
	}
	ok, err = other.TryAcquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.True(t, ok)
	require.NoError(t, other.Close())
	require.NoError(t, other.Close())
	require.NoError(t, l.Close())
}

// An acquire that waits out its timeout on a held key returns false, not
// an error, after the whole timeout (the default 10 s, waited on the
// server); one that never waits says ErrTimeout.
func TestAcquireTimeoutIsNotAnError(t *testing.T) {
	onTimedFleet(t, 1, fakeserver.Config{}, func(t *testing.T, f *testFleet) {
		c := f.client(t, lock.Config{})
		key := uniqueKey(t, "k")
		holder := c.Lock(key)
		mustAcquire(t, holder)

		timeout := lock.DefaultAcquireTimeout
		if f.mem == nil {
			timeout = time.Second // real time
		}
		began := time.Now()
		ok, err := c.Lock(key, lock.AcquireTimeout(timeout)).Acquire(ctxFor(t, 2*timeout))
		require.NoError(t, err)
		assert.False(t, ok)
		assertTook(t, f, timeout, began, "waited on the server")

		err = c.WithLock(ctxFor(t, wait), key, func(context.Context) error {
			t.Fatal("must not run")
			return nil
		}, lock.AcquireTimeout(0))
		assert.ErrorIs(t, err, lock.ErrTimeout)
	})
}

// An acquire ended by its context says the context's error, at the
// instant the context ends, not ErrTimeout: cancelled, or past its
// deadline, WithLock included.
func TestCancellationIsNotATimeout(t *testing.T) {
	onTimedFleet(t, 1, fakeserver.Config{}, func(t *testing.T, f *testFleet) {
		c := f.client(t, lock.Config{})
		key := uniqueKey(t, "k")
		mustAcquire(t, c.Lock(key))

		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		began := time.Now()
		ok, err := c.Lock(key).Acquire(ctx)
		assert.False(t, ok)
		assert.ErrorIs(t, err, context.Canceled)
		assert.NotErrorIs(t, err, lock.ErrTimeout)
		assertTook(t, f, 100*time.Millisecond, began, "returned when cancelled")

		began = time.Now()
		ok, err = c.Lock(key).Acquire(ctxFor(t, 200*time.Millisecond))
		assert.False(t, ok)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.NotErrorIs(t, err, lock.ErrTimeout)
		assertTook(t, f, 200*time.Millisecond, began, "returned at the deadline")

		err = c.WithLock(ctxFor(t, 200*time.Millisecond), key, func(context.Context) error { return nil })
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

func TestBadInputIsRefusedBeforeSending(t *testing.T) {
	c, err := lock.New(lock.Config{Servers: []string{"127.0.0.1:1"}})
	require.NoError(t, err)
	defer c.Close()
	for name, l := range map[string]interface {
		Acquire(context.Context) (bool, error)
	}{
		"space in key":     c.Lock("a b"),
		"empty key":        c.Lock(""),
		"renew ratio":      c.Lock("k", lock.RenewRatio(1.5)),
		"negative lease":   c.Lock("k", lock.LeaseTTL(-time.Second)),
		"sub-second lease": c.Lock("k", lock.LeaseTTL(500*time.Millisecond)),
		"zero limit":       c.Semaphore("k", 0),
	} {
		_, err := l.Acquire(ctxFor(t, wait))
		assert.Error(t, err, name)
	}
	for _, ps := range c.PoolStats() {
		assert.Zero(t, ps.Dials, "nothing was dialled")
	}
	_, err = lock.New(lock.Config{Servers: []string{"a:1", "a:1"}})
	assert.Error(t, err)
	for _, addr := range []string{"127.0.0.1:notaport", "a b", "a b:1", "h:0", "h:65536"} {
		_, err = lock.New(lock.Config{Servers: []string{"127.0.0.1:2", addr}})
		assert.ErrorContains(t, err, "server address", addr)
	}
}

func TestSemaphore(t *testing.T) {
	f := newFleet(t, 2, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	key := uniqueKey(t, "s")
	a, b := c.Semaphore(key, 2), c.Semaphore(key, 2)
	assert.Equal(t, 2, a.Limit())
	for _, s := range []*lock.Semaphore{a, b} {
		ok, err := s.Acquire(ctxFor(t, wait))
		require.NoError(t, err)
		require.True(t, ok)
	}
	ok, err := c.Semaphore(key, 2).TryAcquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.False(t, ok, "both slots taken")
	_, err = c.Semaphore(key, 3).TryAcquire(ctxFor(t, wait))
	assert.ErrorIs(t, err, lock.ErrLimitMismatch)
	mismatch := err
	stable, err := shard.NewStableHash(f.addrs)
	require.NoError(t, err)
	addr, _ := stable.Server(key)
	assert.EqualError(t, mismatch, `semaphore "`+key+`" (limit 3) on `+addr+`: dflockd: the key is in use with another limit (a lock counts as limit 1, and an idle key keeps its limit for the server's --gc-max-idle) (reply "error_limit_mismatch" to sl)`,
		"says what happened, to which key, where, and what the server replied")
	_, err = c.Lock(key).TryAcquire(ctxFor(t, wait))
	assert.ErrorIs(t, err, lock.ErrLimitMismatch)
	assert.ErrorContains(t, err, `lock "`+key+`" on `)

	third := c.Semaphore(key, 2)
	got := make(chan bool, 1)
	go func() {
		ok, err := third.Acquire(ctxFor(t, wait))
		assert.NoError(t, err)
		got <- ok
	}()
	require.NoError(t, a.Release(ctxFor(t, wait)))
	assert.True(t, <-got)

	ran := false
	err = c.WithSemaphore(ctxFor(t, wait), uniqueKey(t, "s2"), 3, func(ctx context.Context) error {
		ran = true
		return nil
	})
	require.NoError(t, err)
	assert.True(t, ran)
}

func TestWithLock(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	key := uniqueKey(t, "k")
	sentinel := errors.New("from fn")
	err := c.WithLock(ctxFor(t, wait), key, func(ctx context.Context) error {
		ok, err := c.Lock(key).TryAcquire(ctx)
		require.NoError(t, err)
		assert.False(t, ok, "held while fn runs")
		return sentinel
	})
	assert.ErrorIs(t, err, sentinel, "fn's error comes back as is")
	ok, err := c.Lock(key).TryAcquire(ctxFor(t, wait))
	require.NoError(t, err)
	require.True(t, ok, "released after fn")
	require.NoError(t, c.Close())

	c = f.client(t, lock.Config{})
	func() {
		defer func() { assert.Equal(t, "boom", recover()) }()
		_ = c.WithLock(ctxFor(t, wait), key+"p", func(context.Context) error { panic("boom") })
	}()
	ok, err = c.Lock(key + "p").TryAcquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.True(t, ok, "released after a panic")
}

// Lock.With is WithLock on a handle fn can reach: its token and lease
// while fn runs, released after, and the handle still usable (WithLock's
// is retired). A loss comes back in the error, as from WithLock.
func TestLockWith(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { testLockWith(t) })
}

func testLockWith(t *testing.T) {
	f := newVirtualFleet(t, 1, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	key := uniqueKey(t, "k")
	l := c.Lock(key, lock.LeaseTTL(7*time.Second))
	var token string
	err := l.With(ctxFor(t, wait), func(ctx context.Context) error {
		token = l.Token()
		assert.Equal(t, 7*time.Second, l.Lease())
		ok, err := c.Lock(key).TryAcquire(ctx)
		require.NoError(t, err)
		assert.False(t, ok, "held while fn runs")
		return nil
	})
	require.NoError(t, err)
	assert.Len(t, token, 32)
	assert.Empty(t, l.Token(), "released after fn")
	assert.Zero(t, l.Lease())
	require.NoError(t, l.With(ctxFor(t, wait), func(context.Context) error { return nil }), "the handle is still usable")
	assert.ErrorIs(t, l.With(ctxFor(t, wait), nil), lock.ErrInvalid)

	srv := f.server(t, 0) // the rest needs its fault hooks
	err = l.With(ctxFor(t, wait), func(ctx context.Context) error {
		srv.DropConnections()
		<-ctx.Done()
		return nil
	})
	assert.ErrorIs(t, err, lock.ErrLockLost)
	synctest.Wait() // every connection has seen the drop
	assert.Zero(t, l.Lease(), "not held after a loss")
	assert.Empty(t, l.Token())
	ok, err := l.Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.True(t, ok, "usable after a loss too")
	require.NoError(t, l.Release(ctxFor(t, wait)))
}

// Hazard 6 (and 5's consequence): a lock lost while fn runs cancels fn's
// context with cause ErrLockLost.
func TestWithLockContextEndsWhenLost(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	srv := f.server(t, 0)
	c := f.client(t, lock.Config{})
	key := uniqueKey(t, "k")
	err := c.WithLock(ctxFor(t, wait), key, func(ctx context.Context) error {
		srv.DropConnections()
		select {
		case <-ctx.Done():
			assert.ErrorIs(t, context.Cause(ctx), lock.ErrLockLost)
			return ctx.Err()
		case <-time.After(wait):
			return errors.New("context not cancelled")
		}
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, lock.ErrLockLost, "the loss is in the error too")

	// A callback that ignores its context and returns nil still hears of
	// the loss.
	err = c.WithLock(ctxFor(t, wait), key, func(ctx context.Context) error {
		srv.DropConnections()
		<-ctx.Done()
		return nil
	})
	assert.ErrorIs(t, err, lock.ErrLockLost)
}

// Hazard 6: each way of losing a lock is reported, at the instant the
// client can know of it: Token "", Lost closed, the callback once, a log
// line with key and server and no token. A dropped connection is lost at
// once; a renewal refused, at the first renewal (half the lease). A lease
// whose renewal gets no answer is lost before the server could let go of
// it: a 30 s one at the server's read timeout on the silent connection
// (23 s after its last answer, less a 1 s margin), a 10 s one at its end
// (less a 250 ms margin).
func TestLostLocksAreReported(t *testing.T) {
	cases := []struct {
		name   string
		lease  time.Duration
		fault  func(srv *fakeserver.Server, key string)
		lostAt time.Duration
	}{
		{"connection dropped", 30 * time.Second, func(srv *fakeserver.Server, _ string) { srv.DropConnections() }, 0},
		{"renewal refused", 30 * time.Second, func(srv *fakeserver.Server, key string) { srv.ExpireNow(key) }, 15 * time.Second},
		{"no renewal confirmed", 30 * time.Second, func(srv *fakeserver.Server, _ string) { srv.Stall(time.Hour) }, 22 * time.Second},
		{"no renewal confirmed, short lease", 10 * time.Second, func(srv *fakeserver.Server, _ string) { srv.Stall(time.Hour) }, 9750 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newVirtualFleet(t, 1, fakeserver.Config{})
				srv := f.server(t, 0)
				defer srv.Unstall()
				var logs testlog.Buffer
				c := f.client(t, lock.Config{Logger: logs.Logger()})
				var calls atomic.Int32
				lostKey := make(chan string, 2)
				key := uniqueKey(t, "k")
				l := c.Lock(key, lock.LeaseTTL(tc.lease), lock.OnLost(func(k string, err error) {
					assert.ErrorIs(t, err, lock.ErrLockLost)
					calls.Add(1)
					lostKey <- k
				}))
				began := time.Now()
				mustAcquire(t, l)
				tok := l.Token()

				tc.fault(srv, key)
				<-l.Lost()
				assert.Equal(t, tc.lostAt, time.Since(began), "reported lost after")
				assert.Equal(t, "", l.Token())
				assert.Equal(t, key, <-lostKey)
				assert.ErrorIs(t, l.Release(ctxFor(t, wait)), lock.ErrLockLost)
				require.NoError(t, l.Close(), "Close after loss is fine")
				synctest.Wait()
				assert.Equal(t, int32(1), calls.Load())
				out := logs.String()
				assert.Contains(t, out, "lock lost")
				assert.Contains(t, out, key)
				assert.Contains(t, out, srv.Addr())
				assert.NotContains(t, out, tok)
			})
		})
	}
}

// Renewal keeps a 1 s lease for a minute of virtual time, each renewal
// sent at 0.3 of the lease and carrying the lease it was taken with
// (hazard 5): the server's view never shows its 33 s default.
func TestRenewalKeepsTheLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		c := f.client(t, lock.Config{})
		l := c.Lock("k", lock.LeaseTTL(time.Second), lock.RenewRatio(0.3))
		mustAcquire(t, l)
		tok := l.Token()
		for range 1200 {
			time.Sleep(50 * time.Millisecond)
			synctest.Wait()
			st := srv.Stats()
			require.Len(t, st.Locks, 1, "still held")
			assert.LessOrEqual(t, st.Locks[0].LeaseExpiresInS, 1.0, "renewed with its own 1 s lease")
			assert.Greater(t, st.Locks[0].LeaseExpiresInS, 0.5, "renewed at 0.3 of the lease")
		}
		assert.Equal(t, tok, l.Token())
		// 60 s at one renewal per 0.3 s.
		assert.InDelta(t, 200, c.RenewalsSent(), 2)
		select {
		case <-l.Lost():
			t.Fatal("lost")
		default:
		}
	})
}

func TestCloseReleasesEverything(t *testing.T) {
	f := newFleet(t, 3, fakeserver.Config{DisableAutoRelease: true})
	c, err := lock.New(lock.Config{Servers: f.addrs})
	require.NoError(t, err)
	var locks []*lock.Lock
	for i := range 30 {
		l := c.Lock(uniqueKey(t, strings.Repeat("k", i+1)))
		ok, err := l.Acquire(ctxFor(t, wait))
		require.NoError(t, err)
		require.True(t, ok)
		locks = append(locks, l)
	}
	q := c.Lock(locks[0].Key())
	st, err := q.Enqueue(ctxFor(t, wait))
	require.NoError(t, err)
	require.Equal(t, lock.Queued, st)

	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	for _, l := range locks {
		assert.Equal(t, "", l.Token())
	}
	if f.fake != nil {
		// With auto-release off on the servers, only explicit releases
		// free the keys.
		for _, s := range f.fake.Servers {
			assert.Empty(t, s.Stats().Locks)
		}
	}
	_, err = c.Lock("after").Acquire(ctxFor(t, wait))
	assert.ErrorIs(t, err, lock.ErrClosed)
}

func TestStats(t *testing.T) {
	f := newFleet(t, 3, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	l := c.Lock(uniqueKey(t, "k"))
	_, err := l.Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	stats := c.Stats(ctxFor(t, wait))
	require.Len(t, stats, len(f.addrs))
	found := 0
	for _, s := range stats {
		require.NoError(t, s.Err)
		for _, li := range s.Stats.Locks {
			if li.Key == l.Key() {
				found++
			}
		}
	}
	assert.Equal(t, 1, found)
}

// TestFullQueue: dflockd answers error_max_waiters to any lock request on
// a key whose queue is full, a try-lock included. A try-lock would never
// join that queue, so for TryAcquire the key is just busy; an Acquire
// that would wait fails with ErrMaxWaiters at once.
func TestFullQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{MaxWaiters: 1})
		srv := f.server(t, 0)
		c := f.client(t, lock.Config{})
		key := uniqueKey(t, "q")
		holder := c.Lock(key)
		mustAcquire(t, holder)
		got := make(chan bool, 1)
		go func() {
			ok, _ := c.Lock(key, lock.AcquireTimeout(time.Minute)).Acquire(context.Background())
			got <- ok
		}()
		synctest.Wait()
		require.Equal(t, 1, waiters(srv, key))

		ok, err := c.Lock(key).TryAcquire(ctxFor(t, wait))
		assert.NoError(t, err, "busy, not an error")
		assert.False(t, ok)
		began := time.Now()
		ok, err = c.Lock(key, lock.AcquireTimeout(time.Second)).Acquire(ctxFor(t, wait))
		assert.ErrorIs(t, err, lock.ErrMaxWaiters)
		assert.ErrorContains(t, err, "the key's queue is full")
		assert.False(t, ok)
		assert.Zero(t, time.Since(began), "at once")

		require.NoError(t, holder.Release(ctxFor(t, wait)))
		assert.True(t, <-got, "the waiter in the queue still gets it")
	})
}

// A server that accepts but never answers cannot hold an acquire past its
// timeout (200 ms), exactly: the try-lock is given up, the error names the
// server, and the key is not acquired.
func TestAcquireTimeoutBoundsAStalledServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		c := f.client(t, lock.Config{})
		// Connected first, so that the stall catches a request in flight.
		mustAcquire(t, c.Lock(uniqueKey(t, "warm")))
		srv.Stall(time.Hour)
		defer srv.Unstall()
		began := time.Now()
		ok, err := c.Lock(uniqueKey(t, "k"), lock.AcquireTimeout(200*time.Millisecond)).Acquire(context.Background())
		assert.Equal(t, 200*time.Millisecond, time.Since(began), "given up at the timeout")
		// Not "busy": the server did not answer, and the error names it.
		require.ErrorIs(t, err, pool.ErrNoReply)
		assert.Contains(t, err.Error(), srv.Addr())
		assert.False(t, ok)
	})
}

// Release waits for a stalled server's answer until ctx ends, or without
// a ctx deadline, for the close timeout; the error names the server, and
// the release still reaches it when it answers.
func TestReleaseBoundsAStalledServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		c := f.client(t, lock.Config{CloseTimeout: 3 * time.Second})
		k := uniqueKey(t, "k")
		l := c.Lock(k)
		for _, ctxTimeout := range []time.Duration{time.Second, 0} {
			mustAcquire(t, l)
			srv.Stall(time.Hour)
			ctx, bound := context.Background(), 3*time.Second
			if ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, ctxTimeout)
				defer cancel()
				bound = ctxTimeout
			}
			began := time.Now()
			err := l.Release(ctx)
			assert.Equal(t, bound, time.Since(began))
			require.Error(t, err)
			assert.Contains(t, err.Error(), srv.Addr())
			assert.NotErrorIs(t, err, lock.ErrLockLost)
			srv.Unstall()
			synctest.Wait()
			assert.Zero(t, keyHolders(srv, k), "released when the server answered")
		}
	})
}

// Servers beside a Strategy over other servers is a mistake said at once.
func TestServersAndStrategyMustAgree(t *testing.T) {
	s, err := shard.NewStableHash([]string{"127.0.0.1:1", "127.0.0.1:2"})
	require.NoError(t, err)
	_, err = lock.New(lock.Config{Strategy: s, Servers: []string{"127.0.0.1:1"}})
	assert.ErrorIs(t, err, lock.ErrInvalid)
	c, err := lock.New(lock.Config{Strategy: s, Servers: []string{"127.0.0.1:2", "127.0.0.1:1"}})
	require.NoError(t, err, "the same servers, in any order")
	c.Close()
}
