package lock_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
)

// keysOf makes n keys named after the test.
func keysOf(t *testing.T, prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = uniqueKey(t, fmt.Sprintf("%s%03d", prefix, i))
	}
	return keys
}

// heldKeys returns the keys of ls.
func heldKeys(ls []*lock.Lock) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Key()
	}
	return out
}

// TryLockMany takes the free keys and names the busy ones, one try-lock
// per key; ReleaseMany gives them back.
func TestTryLockMany(t *testing.T) {
	f := newFleet(t, 3, fakeserver.Config{})
	reader := sdkmetric.NewManualReader()
	c := f.client(t, lock.Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	assertFree(t, c, keysOf(t, "warm", 30)) // connected to every server
	other := f.client(t, lock.Config{})
	keys := keysOf(t, "k", 60)
	var taken []string
	for i, k := range keys {
		if i%4 == 1 {
			mustAcquire(t, other.Lock(k))
			taken = append(taken, k)
		}
	}
	before := requests(c)
	w0, _ := writes(t, reader)
	held, busy, err := c.TryLockMany(ctxFor(t, wait), keys)
	require.NoError(t, err)
	assert.Equal(t, uint64(len(keys)), requests(c)-before, "one try-lock per key")
	w1, _ := writes(t, reader)
	assert.LessOrEqual(t, w1-w0, uint64(len(f.addrs)), "one write per server")
	assert.Equal(t, taken, busy)
	want := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return slices.Contains(taken, k) })
	assert.Equal(t, want, heldKeys(held), "the handles taken, in the order of keys")
	for _, l := range held {
		assert.NotEmpty(t, l.Token())
	}
	assertBusy(t, heldKeys(held), other)

	require.NoError(t, c.ReleaseMany(ctxFor(t, wait), held...))
	for _, l := range held {
		assert.Empty(t, l.Token())
	}
	again, busy, err := other.TryLockMany(ctxFor(t, wait), want)
	require.NoError(t, err)
	assert.Empty(t, busy, "everything was released")
	assert.Len(t, again, len(want))

	// A nil handle is refused; the others are still released.
	err = other.ReleaseMany(ctxFor(t, wait), append([]*lock.Lock{nil}, again...)...)
	assert.ErrorIs(t, err, lock.ErrInvalid)
	var nilErr *lock.KeysError
	require.ErrorAs(t, err, &nilErr, "a *KeysError, as the doc says")
	assert.Equal(t, []string{""}, nilErr.Keys, "the nil handle alone failed")
	assertFree(t, c, want)

	// A second release of the same handles says which were not held.
	err = c.ReleaseMany(ctxFor(t, wait), held[:2]...)
	var ke *lock.KeysError
	require.ErrorAs(t, err, &ke)
	assert.Equal(t, heldKeys(held[:2]), ke.Keys)
	assert.ErrorIs(t, err, lock.ErrNotHeld)
}

// Invalid keys, a key given twice and bad options are refused before
// anything is sent.
func TestManyRefusesBadInput(t *testing.T) {
	f := newFleet(t, 2, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	ctx := ctxFor(t, wait)
	for name, call := range map[string]func() error{
		"bad key":       func() error { _, _, err := c.TryLockMany(ctx, []string{"ok", "bad key"}); return err },
		"twice":         func() error { _, _, err := c.TryLockMany(ctx, []string{"a", "b", "a"}); return err },
		"bad option":    func() error { _, _, err := c.TryLockMany(ctx, []string{"a"}, lock.LeaseTTL(-1)); return err },
		"limit":         func() error { _, _, err := c.TrySemaphoreMany(ctx, []string{"a"}, 0); return err },
		"all twice":     func() error { _, err := c.LockAll(ctx, []string{"a", "a"}); return err },
		"all none":      func() error { _, err := c.LockAll(ctx, nil); return err },
		"all bad key":   func() error { _, err := c.LockAll(ctx, []string{"a", ""}); return err },
		"sem all limit": func() error { _, err := c.SemaphoreAll(ctx, []string{"a"}, -1); return err },
		//lint:ignore SA1012 a nil context is what is tested
		"nil ctx": func() error { _, _, err := c.TryLockMany(nil, []string{"a"}); return err },
		//lint:ignore SA1012 a nil context is what is tested
		"all nil ctx": func() error { _, err := c.LockAll(nil, []string{"a"}); return err },
	} {
		assert.ErrorIs(t, call(), lock.ErrInvalid, name)
	}
	assert.Zero(t, requests(c), "nothing was sent")
	held, busy, err := c.TryLockMany(ctx, nil)
	assert.NoError(t, err)
	assert.Empty(t, held)
	assert.Empty(t, busy)
}

// A server that cannot be reached fails its keys only: the others are
// taken, and the error names the failed keys.
func TestTryLockManyServerDown(t *testing.T) {
	f := newFleet(t, 3, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	require.NoError(t, f.server(t, 1).Stop())
	keys := keysOf(t, "k", 30)
	held, busy, err := c.TryLockMany(ctxFor(t, wait), keys)
	var ke *lock.KeysError
	require.ErrorAs(t, err, &ke)
	assert.Empty(t, busy)
	for _, k := range keys {
		srv, err := c.ServerFor(k)
		require.NoError(t, err)
		if srv == f.addrs[1] {
			assert.Contains(t, ke.Keys, k)
		} else {
			assert.Contains(t, heldKeys(held), k)
		}
	}
	assert.Len(t, ke.Keys, len(keys)-len(held))
	assert.NoError(t, c.ReleaseMany(ctxFor(t, wait), held...))
}

// Replicated keys, and keys moving in a fleet change, are taken as
// TryAcquire takes them: on a quorum of every route.
func TestTryLockManyReplicatedAndMoving(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("r%d", replicas), func(t *testing.T) {
			g := newGrown(t, "consistent")
			tr := g.transition(t)
			c := g.client(t, tr, replicas)
			before := g.client(t, g.before, replicas)
			moved, stay := g.keys(t, uniqueKey(t, "k"), 20, replicas)
			keys := append(slices.Clone(moved), stay...)
			// Held by a client before the change: busy for one in it.
			mustAcquire(t, before.Lock(moved[0]))
			held, busy, err := c.TryLockMany(ctxFor(t, wait), keys)
			require.NoError(t, err)
			assert.Equal(t, []string{moved[0]}, busy)
			assert.Len(t, held, len(keys)-1)
			for _, l := range held {
				assertFollows(t, l, tr, replicas)
				g.assertHeldOnServers(t, l)
			}
			// Also held against clients before the change.
			assertBusy(t, keys[1:], before)
			require.NoError(t, c.ReleaseMany(ctxFor(t, wait), held...))
		})
	}
}

// TrySemaphoreMany takes one slot of each semaphore.
func TestTrySemaphoreMany(t *testing.T) {
	f := newFleet(t, 2, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	keys := keysOf(t, "s", 6)
	for range 2 {
		held, busy, err := c.TrySemaphoreMany(ctxFor(t, wait), keys, 2)
		require.NoError(t, err)
		assert.Empty(t, busy)
		assert.Len(t, held, len(keys))
	}
	held, busy, err := c.TrySemaphoreMany(ctxFor(t, wait), keys, 2)
	require.NoError(t, err)
	assert.Empty(t, held)
	assert.Equal(t, keys, busy, "both slots of every key are taken")
	_, _, err = c.TrySemaphoreMany(ctxFor(t, wait), keys, 3)
	assert.ErrorIs(t, err, lock.ErrLimitMismatch)
}

// LockAll holds every key, in byte order; a second release says the set
// is not held, and a timeout of 0 tries every key once. On loopback TCP,
// and against real servers.
func TestLockAll(t *testing.T) {
	f := newFleet(t, 3, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	other := f.client(t, lock.Config{})
	keys := keysOf(t, "k", 8)
	s, err := c.LockAll(ctxFor(t, wait), keys)
	require.NoError(t, err)
	assert.Equal(t, keys, s.Keys(), "in byte order")
	for _, k := range keys {
		assert.NotEmpty(t, s.Token(k))
	}
	assertBusy(t, keys, other)
	assert.Empty(t, s.Token("not-in-the-set"))
	require.NoError(t, s.Release(ctxFor(t, wait)))
	assert.ErrorIs(t, s.Release(ctxFor(t, wait)), lock.ErrNotHeld)

	// A timeout of 0 tries once: a busy key fails the set, and what it
	// took is given back.
	mid := other.Lock(keys[4])
	mustAcquire(t, mid)
	_, err = c.LockAll(ctxFor(t, wait), keys, lock.AcquireTimeout(0))
	assert.ErrorIs(t, err, lock.ErrTimeout)
	assertFree(t, other, slices.Delete(slices.Clone(keys), 4, 5))
	s, err = c.LockAll(ctxFor(t, wait), keys[:4], lock.AcquireTimeout(0))
	require.NoError(t, err, "free keys are taken")
	require.NoError(t, s.Release(ctxFor(t, wait)))
}

// A busy key is waited for in the server's queue, holding the keys before
// it and not those after it; a timeout gives back everything taken at
// exactly the timeout, and so does a cancellation, at once. In virtual
// time: synctest.Wait, not polling, says when the set waits, so no
// waiter left from a phase before can be taken for it.
func TestLockAllWaitsForABusyKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 3, fakeserver.Config{})
		c := f.client(t, lock.Config{})
		other := f.client(t, lock.Config{})
		keys := keysOf(t, "k", 8)
		mid := other.Lock(keys[4])
		mustAcquire(t, mid)
		rest := slices.Delete(slices.Clone(keys), 4, 5)

		// lockAll starts c.LockAll(ctx, keys, opts...) and returns once it
		// waits in keys[4]'s queue, which nothing else waits in.
		lockAll := func(ctx context.Context, opts ...lock.Option) <-chan error {
			t.Helper()
			synctest.Wait()
			require.Zero(t, waitersOnFleet(f, keys[4]), "a waiter left from before")
			got := make(chan error, 1)
			go func() {
				s, err := c.LockAll(ctx, keys, opts...)
				if err == nil {
					err = s.Release(ctxFor(t, wait))
				}
				got <- err
			}()
			synctest.Wait()
			require.Equal(t, 1, waitersOnFleet(f, keys[4]))
			return got
		}

		got := lockAll(ctxFor(t, wait))
		for i, k := range keys {
			if i == 4 {
				continue
			}
			l := other.Lock(k)
			ok, err := l.TryAcquire(ctxFor(t, wait))
			require.NoError(t, err)
			assert.Equal(t, i > 4, ok, "%s: held while waiting only if before the busy key", k)
			if ok {
				require.NoError(t, l.Release(ctxFor(t, wait)))
			}
		}
		require.NoError(t, mid.Release(ctxFor(t, wait)))
		require.NoError(t, <-got)

		// Timeout: at exactly the timeout, everything taken is given back.
		mustAcquire(t, mid)
		start := time.Now()
		err := <-lockAll(ctxFor(t, wait), lock.AcquireTimeout(time.Second))
		assert.Equal(t, time.Second, time.Since(start), "returned at its timeout")
		assert.ErrorIs(t, err, lock.ErrTimeout)
		var te *lock.SetTimeoutError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, lock.SetTimeoutError{Keys: len(keys), Timeout: time.Second, Busy: keys[4]}, *te)
		assert.ErrorContains(t, err, keys[4])
		assertFree(t, other, rest)

		// Cancellation: the context's error at once, and nothing held.
		ctx, cancel := context.WithCancel(context.Background())
		got = lockAll(ctx)
		start = time.Now()
		cancel()
		assert.ErrorIs(t, <-got, context.Canceled)
		assert.Zero(t, time.Since(start), "returned when cancelled")
		assertFree(t, other, rest)
	})
}

// assertFree asserts that c can take every key at once, and gives them
// back.
func assertFree(t *testing.T, c *lock.Client, keys []string) {
	t.Helper()
	held, busy, err := c.TryLockMany(ctxFor(t, wait), keys)
	require.NoError(t, err)
	assert.Empty(t, busy, "keys still held")
	require.NoError(t, c.ReleaseMany(ctxFor(t, wait), held...))
}

// assertBusy asserts that none of clients can take any of keys.
func assertBusy(t *testing.T, keys []string, clients ...*lock.Client) {
	t.Helper()
	for _, c := range clients {
		for _, k := range keys {
			ok, err := c.Lock(k).TryAcquire(ctxFor(t, wait))
			require.NoError(t, err)
			assert.False(t, ok, "%s taken by another client", k)
		}
	}
}

// waitersOnFleet counts the waiters in key's queue over the fleet.
func waitersOnFleet(f *testFleet, key string) int {
	n := 0
	for i := range f.addrs {
		for _, l := range f.fake.Servers[i].Stats().Locks {
			if l.Key == key {
				n += l.Waiters
			}
		}
	}
	return n
}

// The loss of one member is the loss of the set: Lost, Err, OnLost,
// WithLockAll's context; the other members stay held until the set is
// released, which reports the loss.
func TestSetLostWithOneMember(t *testing.T) {
	f := newFleet(t, 3, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	d := newLossDetector(t, f)
	d.watch(c)
	keys := keysOf(t, "k", 9)
	victim := f.server(t, 0)
	probe := f.client(t, lock.Config{})
	var onLost atomic.Int32
	lostKey := make(chan string, 4)
	err := c.WithLockAll(ctxFor(t, wait), keys, func(ctx context.Context) error {
		require.Positive(t, victim.DropConnections())
		<-ctx.Done()
		assert.ErrorIs(t, context.Cause(ctx), lock.ErrLockLost)
		// The members on the other servers are still held.
		for _, k := range keys {
			srv, err := c.ServerFor(k)
			require.NoError(t, err)
			if srv == f.addrs[0] {
				continue
			}
			ok, err := probe.Lock(k).TryAcquire(ctxFor(t, wait))
			require.NoError(t, err)
			assert.False(t, ok, "%s is released only with the set", k)
		}
		return nil
	}, lock.OnLost(func(key string, err error) {
		onLost.Add(1)
		lostKey <- key
	}))
	assert.ErrorIs(t, err, lock.ErrLockLost, "the loss is returned although fn returned nil")
	k := <-lostKey
	srv, _ := c.ServerFor(k)
	assert.Equal(t, f.addrs[0], srv)
	assertFree(t, probe, keys)
	assert.Equal(t, int32(1), onLost.Load(), "OnLost runs once for the set")
	d.assertNoFalseLoss(t)
}

// twoKeysApart returns two keys of t on different servers of f (by
// StableHash, the default strategy): the deadlock a naive loop risks is
// across shards.
func twoKeysApart(t *testing.T, f *testFleet) (a, b string) {
	t.Helper()
	strategy, err := shard.NewStableHash(f.addrs)
	require.NoError(t, err)
	a = uniqueKey(t, "a")
	sa, _ := strategy.Server(a)
	for i := 0; ; i++ {
		b = uniqueKey(t, fmt.Sprintf("b%d", i))
		if sb, _ := strategy.Server(b); sb != sa {
			return a, b
		}
	}
}

// Two clients take {a, b} and {b, a} together 300 times each, holding
// them 50 µs of virtual time: they never hold a key together, and no
// LockAll waits longer than the other's hold; none waits for a
// server-side timeout (whole seconds), let alone its own.
func TestLockAllOppositeOrders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 2, fakeserver.Config{})
		a, b := twoKeysApart(t, f)
		const timeout = 20 * time.Second
		h := newHistory()
		orders := [][]string{{a, b}, {b, a}}
		var wg sync.WaitGroup
		var slowest atomic.Int64
		var sets atomic.Int64
		for w, keys := range orders {
			c := f.client(t, lock.Config{})
			watchLosses(c, h.declare)
			wg.Go(func() {
				for range 300 {
					start := time.Now()
					s, err := c.LockAll(context.Background(), keys, lock.AcquireTimeout(timeout))
					took := time.Since(start)
					if !assert.NoError(t, err) {
						return
					}
					sets.Add(1)
					for old := slowest.Load(); int64(took) > old && !slowest.CompareAndSwap(old, int64(took)); old = slowest.Load() {
					}
					grants := lock.SetGrantsOf(s)
					var claims []*claim
					for _, k := range keys {
						var refs []grantRef
						for _, g := range grants[k] {
							refs = append(refs, grantRef{k, g.Addr, g.Token})
						}
						claims = append(claims, h.begin(k, 0, fmt.Sprint(w), refs))
					}
					time.Sleep(50 * time.Microsecond) // the work
					end := h.now()
					for _, cl := range claims {
						cl.finish(end, false)
					}
					require.NoError(t, s.Release(context.Background()))
				}
			})
		}
		wg.Wait()
		assert.Equal(t, int64(600), sets.Load())
		if v := h.violations(); !assert.Zero(t, len(v), "overlaps") {
			t.Log(v[0].text)
		}
		assert.LessOrEqual(t, time.Duration(slowest.Load()), 50*time.Microsecond, "a LockAll waited longer than the other's hold")
		t.Logf("slowest LockAll: %v of virtual time", time.Duration(slowest.Load()))
	})
}

// The same two orders, taken a key at a time as callers did before
// LockAll, do deadlock: the control that shows the test above can fail.
// Each side holds its first key and waits for its second until the
// acquire timeout, a virtual second.
func TestLoopInOppositeOrdersDeadlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 2, fakeserver.Config{})
		a, b := twoKeysApart(t, f)
		orders := [][]string{{a, b}, {b, a}}
		var timeouts atomic.Int32
		var stuck atomic.Int64
		var wg sync.WaitGroup
		for _, keys := range orders {
			c := f.client(t, lock.Config{})
			wg.Go(func() {
				for range 100 {
					if timeouts.Load() > 0 {
						return
					}
					first, second := c.Lock(keys[0], lock.AcquireTimeout(time.Second)), c.Lock(keys[1], lock.AcquireTimeout(time.Second))
					ok, err := first.Acquire(context.Background())
					if err != nil || !ok {
						continue
					}
					start := time.Now()
					if ok, err := second.Acquire(context.Background()); err == nil && !ok {
						timeouts.Add(1)
						stuck.Store(int64(time.Since(start)))
					}
					time.Sleep(50 * time.Microsecond) // the work
					_ = second.Close()
					_ = first.Close()
				}
			})
		}
		wg.Wait()
		require.Positive(t, timeouts.Load(), "the naive loop never deadlocked")
		assert.Equal(t, time.Second, time.Duration(stuck.Load()), "stuck until the acquire timeout")
	})
}

// The checker, in virtual time: 32 workers each take a random 2 to 5 of
// 20 keys, in random order, and hold them 1 to 20 ms, for 20 s (5 s
// with -short). No key ever has two holders, every LockAll returns
// within its timeout, and every worker gets on.
func TestLockAllChecker(t *testing.T) {
	run := 20 * time.Second
	if testing.Short() {
		run = 5 * time.Second
	}
	runSetChecker(t, setChecker{servers: 3, workers: 32, keys: 20, run: run})
}

// The same with replicated keys, over five servers.
func TestLockAllCheckerReplicated(t *testing.T) {
	runSetChecker(t, setChecker{servers: 5, replicas: 3, workers: 16, keys: 20, run: shortened(5 * time.Second)})
}

// The same through one client with few connections: a set must never
// wait for a connection while holding keys that the waits on those
// connections wait for.
func TestLockAllCheckerFewConnections(t *testing.T) {
	runSetChecker(t, setChecker{servers: 3, workers: 16, keys: 20, clients: 1, maxConns: 2, run: shortened(3 * time.Second)})
}

// The same while servers drop connections, stall and restart, for 30 s
// of virtual time (150 faults; 10 s with -short): sets are lost and
// fail, but no key has two holders beyond the window a holder takes to
// read its closed connection (no virtual time at all), none is reported
// lost that the servers still held, and nothing deadlocks.
func TestLockAllCheckerUnderFaults(t *testing.T) {
	run := 30 * time.Second
	if testing.Short() {
		run = 10 * time.Second
	}
	runSetChecker(t, setChecker{servers: 3, workers: 16, keys: 20, run: run, faults: true})
}

// The same with semaphores of two slots.
func TestSemaphoreAllChecker(t *testing.T) {
	runSetChecker(t, setChecker{servers: 3, workers: 16, keys: 10, limit: 2, run: shortened(5 * time.Second)})
}

type setChecker struct {
	servers, replicas, workers, keys, limit int
	clients, maxConns                       int           // default 4 clients, the pool's default
	run                                     time.Duration // virtual
	// faults, when set, drops a random server's connections, stalls it,
	// or restarts it empty, every 200 ms: sets are lost and fail, and
	// overlaps are allowed only in the window a holder takes to read its
	// closed connection.
	faults bool
}

// shortened is d, or a third of it with -short.
func shortened(d time.Duration) time.Duration {
	if testing.Short() {
		return d / 3
	}
	return d
}

// setTimeout is the checkers' acquire timeout: no LockAll may need it.
const setTimeout = 10 * time.Second

// runSetChecker runs sc in a synctest bubble: its run and every hold
// and wait are virtual time, so a busy machine cannot stretch a hold
// past a lease or a LockAll past its timeout.
func runSetChecker(t *testing.T, sc setChecker) {
	synctest.Test(t, func(t *testing.T) { sc.check(t) })
}

func (sc setChecker) check(t *testing.T) {
	f := newVirtualFleet(t, sc.servers, fakeserver.Config{LeaseSweepInterval: 50 * time.Millisecond})
	d := newLossDetector(t, f)
	keys := keysOf(t, "k", sc.keys)
	h := newHistory()
	done := make([]int, sc.workers)
	var slowest atomic.Int64
	began := time.Now()
	stop := began.Add(sc.run)
	clients := make([]*lock.Client, cmp.Or(sc.clients, 4))
	for i := range clients {
		clients[i] = f.client(t, lock.Config{Replicas: sc.replicas, Pool: pool.Config{MaxConns: sc.maxConns}})
		watchLosses(clients[i], d.check, h.declare)
	}
	var wg sync.WaitGroup
	var faults, failed atomic.Int64
	if sc.faults {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(7, 15))
			for time.Now().Before(stop) {
				time.Sleep(200 * time.Millisecond)
				srv := f.server(t, rng.IntN(len(f.addrs)))
				faults.Add(1)
				switch rng.IntN(3) {
				case 0:
					srv.DropConnections()
				case 1:
					srv.Stall(time.Duration(100+rng.IntN(900)) * time.Millisecond)
				default:
					srv.Stop()
					srv.Restart()
				}
			}
		})
	}
	for w := range sc.workers {
		c := clients[w%len(clients)]
		rng := rand.New(rand.NewPCG(uint64(w), 15))
		wg.Go(func() {
			for time.Now().Before(stop) {
				held, ok := sc.round(t, c, h, rng, keys, w, &slowest, &failed)
				if !ok {
					return
				}
				if held {
					done[w]++
				}
			}
		})
	}
	wg.Wait()
	v := h.violations()
	all := len(v)
	if sc.faults {
		// The protocol has no fencing: a server that closes a holder's
		// connection may hand its key on before the holder reads the
		// close, which in a bubble takes no virtual time.
		v = slices.DeleteFunc(v, func(v violation) bool { return v.byLoss && v.overlap <= virtualDetectionWindow })
	}
	if !assert.Zero(t, len(v), "overlaps") {
		t.Log(v[0].text)
	}
	assert.Less(t, time.Duration(slowest.Load()), setTimeout, "every LockAll returned within its timeout")
	total := 0
	for w, n := range done {
		assert.Positive(t, n, "worker %d made no progress", w)
		total += n
	}
	if !sc.faults {
		assert.Zero(t, d.reported.Load(), "no fault, no loss")
	}
	d.assertNoFalseLoss(t)
	renewed := renewals(clients)
	t.Logf("%d sets in %v of virtual time by %d workers (fewest by one worker: %d), slowest LockAll %v, %d claims, %d renewals; %d faults, %d failed, %d losses, %d overlaps of the detection window",
		total, time.Since(began), sc.workers, slices.Min(done), time.Duration(slowest.Load()), h.count(), renewed, faults.Load(), failed.Load(), d.reported.Load(), all-len(v))
}

// round takes a random set for worker w, holds it a while and releases
// it, recording the claims: held says it took the set (a set that fails
// under faults counts in failed instead), !ok that the test failed.
func (sc setChecker) round(t *testing.T, c *lock.Client, h *history, rng *rand.Rand, keys []string, w int, slowest, failed *atomic.Int64) (held, ok bool) {
	n := 2 + rng.IntN(4)
	pick := slices.Clone(keys)
	rng.Shuffle(len(pick), func(i, j int) { pick[i], pick[j] = pick[j], pick[i] })
	pick = pick[:n]
	start := time.Now()
	var s *lock.Set
	var err error
	if sc.limit > 0 {
		s, err = c.SemaphoreAll(context.Background(), pick, sc.limit, lock.AcquireTimeout(setTimeout), lock.LeaseTTL(time.Second))
	} else {
		s, err = c.LockAll(context.Background(), pick, lock.AcquireTimeout(setTimeout), lock.LeaseTTL(time.Second))
	}
	took := time.Since(start)
	for old := slowest.Load(); int64(took) > old && !slowest.CompareAndSwap(old, int64(took)); old = slowest.Load() {
	}
	if sc.faults && err != nil && !errors.Is(err, lock.ErrTimeout) {
		failed.Add(1) // a server down or stalled
		time.Sleep(10 * time.Millisecond)
		return false, true
	}
	if !assert.NoError(t, err, "worker %d", w) {
		return false, false
	}
	// The claims begin on the grants the members hold now: a loss the
	// client declares from here on ends them.
	grants := lock.SetGrantsOf(s)
	claims := make([]*claim, 0, n)
	for _, k := range pick {
		var refs []grantRef
		for _, g := range grants[k] {
			refs = append(refs, grantRef{k, g.Addr, g.Token})
		}
		claims = append(claims, h.begin(k, sc.limit, fmt.Sprint(w), refs))
	}
	lost := false
	select {
	case <-time.After(time.Millisecond + time.Duration(rng.IntN(19_000))*time.Microsecond): // the work
	case <-s.Lost():
		lost = true
	}
	end := h.now()
	for _, cl := range claims {
		cl.finish(end, lost)
	}
	err = s.Release(context.Background())
	if !(sc.faults && errors.Is(err, lock.ErrLockLost)) && !assert.NoError(t, err) {
		return true, false
	}
	return true, true
}

// A set taken while the fleet changes follows it: a fleet change under
// held sets carries every member, and a second client before the change
// is excluded.
func TestLockAllAcrossAFleetChange(t *testing.T) {
	g := newGrown(t, "consistent")
	c := g.client(t, g.before, 1)
	before := g.client(t, g.before, 1)
	moved, stay := g.keys(t, uniqueKey(t, "k"), 4, 1)
	keys := append(slices.Clone(moved), stay...)
	s, err := c.LockAll(ctxFor(t, wait), keys)
	require.NoError(t, err)
	require.NoError(t, c.Reconfigure(ctxFor(t, wait), g.after))
	select {
	case <-s.Lost():
		t.Fatalf("lost in the change: %v", s.Err())
	default:
	}
	after := g.client(t, g.after, 1)
	assertBusy(t, keys, before, after)
	require.NoError(t, c.Commit(ctxFor(t, wait)))
	require.NoError(t, s.Release(ctxFor(t, wait)))
	assertFree(t, after, keys)

	// In the transition, a set is taken on both routes of a moving key.
	require.NoError(t, c.Reconfigure(ctxFor(t, wait), g.before))
	s, err = c.LockAll(ctxFor(t, wait), keys)
	require.NoError(t, err)
	assertBusy(t, keys, before, after)
	require.NoError(t, s.Release(ctxFor(t, wait)))
}

// Closing the client releases a set's members; the set then reports
// them not held.
func TestSetAfterClientClose(t *testing.T) {
	f := newFleet(t, 2, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	keys := keysOf(t, "k", 4)
	s, err := c.LockAll(ctxFor(t, wait), keys)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	assertFree(t, f.client(t, lock.Config{}), keys)
	// Close released the set under its holder, who hears of it as of a
	// loss.
	assert.True(t, gotLost(s.Lost()))
	err = s.Release(ctxFor(t, wait))
	assert.ErrorIs(t, err, lock.ErrLockLost)
	assert.ErrorIs(t, err, lock.ErrClosed)
	_, err = c.LockAll(ctxFor(t, wait), keys)
	assert.ErrorIs(t, err, lock.ErrClosed)
}

// twoServers starts two servers and two clients, c and other, and
// returns keys first and second: first sorts before second, and lives on
// server 0, second on server 1.
// On an in-memory network, in a synctest bubble.
func twoServers(t *testing.T) (f *testFleet, c, other *lock.Client, first, second string) {
	t.Helper()
	f = newVirtualFleet(t, 2, fakeserver.Config{})
	c, other = f.client(t, lock.Config{}), f.client(t, lock.Config{})
	return f, c, other, keyOn(t, c, "a", f.addrs[0]), keyOn(t, c, "b", f.addrs[1])
}

// keyOn returns a key named after prefix whose server is addr.
func keyOn(t *testing.T, c *lock.Client, prefix, addr string) string {
	t.Helper()
	for i := 0; ; i++ {
		k := uniqueKey(t, fmt.Sprintf("%s%d", prefix, i))
		if srv, err := c.ServerFor(k); err == nil && srv == addr {
			return k
		}
	}
}

// A set that must give keys back to a stalled server returns 50 ms after
// its own timeout, or after it is cancelled, to the virtual nanosecond:
// the releases go out, their answers are not waited for longer. The key
// goes back when the server answers again.
func TestLockAllGivesBackToAStalledServerInTime(t *testing.T) {
	for _, cancelled := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancelled=%v", cancelled), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f, c, other, first, second := twoServers(t)
				mustAcquire(t, other.Lock(second))
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				got := make(chan error, 1)
				start := time.Now()
				go func() {
					_, err := c.LockAll(ctx, []string{second, first}, lock.AcquireTimeout(time.Second))
					got <- err
				}()
				// Holding first, it waits for second; then first's server
				// stalls.
				synctest.Wait()
				require.Equal(t, 1, waitersOnFleet(f, second))
				require.Equal(t, 1, keyHolders(f.server(t, 0), first))
				f.server(t, 0).Stall(time.Minute)
				if cancelled {
					cancel()
				}
				err := <-got
				took := time.Since(start)
				if cancelled {
					assert.ErrorIs(t, err, context.Canceled)
					assert.Equal(t, 50*time.Millisecond, took, "the give-back waited 50 ms for the stalled server")
				} else {
					assert.ErrorIs(t, err, lock.ErrTimeout)
					assert.Equal(t, time.Second+50*time.Millisecond, took, "the timeout, and 50 ms for the give-back's answers")
				}
				synctest.Wait()
				assert.Equal(t, 1, keyHolders(f.server(t, 0), first), "the stalled server has not read the release")
				f.server(t, 0).Unstall()
				synctest.Wait()
				assert.Zero(t, keyHolders(f.server(t, 0), first), "first given back")
			})
		})
	}
}

// A stalled server's keys are neither taken nor busy: TryLockMany says
// so with pool.ErrNoReply after exactly the replica timeout (how long a
// try-lock's answer is awaited), and the grants the server sends when it
// answers again go back at once.
func TestTryLockManyStalledServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 2, fakeserver.Config{})
		c := f.client(t, lock.Config{})
		keys := keysOf(t, "k", 20)
		assertFree(t, c, keys) // connected
		f.server(t, 1).Stall(time.Minute)
		start := time.Now()
		held, busy, err := c.TryLockMany(ctxFor(t, wait), keys)
		assert.Equal(t, lock.DefaultReplicaTimeout, time.Since(start))
		assert.Empty(t, busy)
		var ke *lock.KeysError
		require.ErrorAs(t, err, &ke)
		assert.ErrorIs(t, err, pool.ErrNoReply)
		for _, k := range ke.Keys {
			srv, _ := c.ServerFor(k)
			assert.Equal(t, f.addrs[1], srv)
		}
		require.NotEmpty(t, ke.Keys)
		assert.Len(t, held, len(keys)-len(ke.Keys))
		require.NoError(t, c.ReleaseMany(ctxFor(t, wait), held...))
		f.server(t, 1).Unstall()
		synctest.Wait()
		for _, k := range ke.Keys {
			assert.Zero(t, keyHolders(f.server(t, 1), k), "%s: the late grant went back", k)
		}
	})
}

// Running nothing is refused before anything is taken.
func TestWithNilFunction(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	ctx := ctxFor(t, wait)
	assert.ErrorIs(t, c.WithLockAll(ctx, []string{"a", "b"}, nil), lock.ErrInvalid)
	assert.ErrorIs(t, c.WithSemaphoreAll(ctx, []string{"a", "b"}, 2, nil), lock.ErrInvalid)
	assert.ErrorIs(t, c.WithLock(ctx, "a", nil), lock.ErrInvalid)
	assert.ErrorIs(t, c.WithSemaphore(ctx, "a", 2, nil), lock.ErrInvalid)
	assert.Zero(t, requests(c))
}

// A replicated key whose arbiter (its first replica) is held elsewhere is
// busy for TryLockMany as for TryAcquire, although the other replicas,
// a quorum, are free: taking it there would jump the arbiter's queue.
func TestTryLockManyRespectsTheArbiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 3, fakeserver.Config{})
		c := f.client(t, lock.Config{Replicas: 3})
		key := uniqueKey(t, "k")
		servers, err := c.ServersFor(key)
		require.NoError(t, err)
		arbiterOnly := f.client(t, lock.Config{Servers: servers[:1]})
		mustAcquire(t, arbiterOnly.Lock(key))

		held, busy, err := c.TryLockMany(ctxFor(t, wait), []string{key})
		require.NoError(t, err)
		assert.Empty(t, held)
		assert.Equal(t, []string{key}, busy)
		synctest.Wait()
		for i, a := range f.addrs {
			if a != servers[0] {
				assert.Zero(t, keyHolders(f.server(t, i), key), "the other replicas given back")
			}
		}
		ok, err := c.Lock(key).TryAcquire(ctxFor(t, wait))
		require.NoError(t, err)
		assert.False(t, ok, "TryAcquire agrees")
	})
}

// A member lost while the set waits for a later one (its server dropped
// the connection) makes the set start over: it still ends holding
// every key, and never reports the earlier loss as the set's.
func TestLockAllStartsOverWhenAMemberIsLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, c, other, first, second := twoServers(t)
		busy := other.Lock(second)
		mustAcquire(t, busy)
		got := make(chan *lock.Set, 1)
		go func() {
			s, err := c.LockAll(ctxFor(t, wait), []string{second, first})
			assert.NoError(t, err)
			got <- s
		}()
		synctest.Wait()
		require.Equal(t, 1, waitersOnFleet(f, second))
		require.Equal(t, 1, keyHolders(f.server(t, 0), first))
		// first, held while the set waits for second, is lost.
		f.server(t, 0).DropConnections()
		synctest.Wait()
		require.Zero(t, keyHolders(f.server(t, 0), first))
		require.NoError(t, busy.Release(ctxFor(t, wait)))
		s := <-got
		require.NotNil(t, s)
		assert.False(t, gotLost(s.Lost()), "the set reports a loss from before it was held: %v", s.Err())
		assertBusy(t, []string{first, second}, other)
		require.NoError(t, s.Release(ctxFor(t, wait)))
	})
}
