package lock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testproxy"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/shard"
)

// replicated starts n fakeservers in the test's synctest bubble (call it
// inside synctest.Test) and returns them with the key's R replicas'
// servers, in replica order.
func replicated(t *testing.T, n, r int, key string) (*testFleet, []*fakeserver.Server, []string) {
	t.Helper()
	f := newVirtualFleet(t, n, fakeserver.Config{LeaseSweepInterval: 50 * time.Millisecond})
	s, err := shard.NewStableHash(f.addrs)
	require.NoError(t, err)
	addrs, err := shard.Replicas(s, key, r)
	require.NoError(t, err)
	srvs := make([]*fakeserver.Server, r)
	for i, a := range addrs {
		for j, fa := range f.addrs {
			if fa == a {
				srvs[i] = f.server(t, j)
			}
		}
	}
	return f, srvs, addrs
}

// Replicas must be 1 or an odd count no larger than the fleet.
func TestReplicasConfigChecked(t *testing.T) {
	f := newFleet(t, 3, fakeserver.Config{})
	for _, r := range []int{2, -1, 5} {
		_, err := lock.New(lock.Config{Servers: f.addrs, Replicas: r})
		assert.ErrorIs(t, err, lock.ErrInvalid, "Replicas %d", r)
	}
	c, err := lock.New(lock.Config{Servers: f.addrs, Replicas: 3})
	require.NoError(t, err)
	c.Close()
}

// A replicated lock is held on each of its replicas, a contender waits on
// the arbiter (the key's first replica) holding nothing, and gets the
// lock within a hand-over of the holder letting go.
func TestReplicatedLockHeldOnEveryReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, addrs := replicated(t, 5, 3, "k")
		a := f.client(t, lock.Config{Replicas: 3})
		b := f.client(t, lock.Config{Replicas: 3})

		la := a.Lock("k")
		mustAcquire(t, la)
		assert.NotEmpty(t, la.Token())
		// The last replica's answer may come after Acquire returned, but
		// takes no time.
		synctest.Wait()
		assert.Equal(t, addrs, la.HeldOn())
		for _, srv := range srvs {
			assert.True(t, keyHeld(srv, "k"), "every replica holds the key")
		}

		lb := b.Lock("k", lock.AcquireTimeout(5*time.Second))
		ok, err := lb.TryAcquire(ctxFor(t, wait))
		require.NoError(t, err)
		assert.False(t, ok, "held by a")

		got := make(chan time.Time, 1)
		go func() {
			ok, err := lb.Acquire(context.Background())
			assert.NoError(t, err)
			assert.True(t, ok)
			got <- time.Now()
		}()
		synctest.Wait()
		assert.Equal(t, 1, waiters(srvs[0], "k"), "b waits on the arbiter")
		for _, srv := range srvs[1:] {
			assert.Zero(t, waiters(srv, "k"), "and nowhere else")
		}
		assert.Empty(t, lb.HeldOn(), "holding nothing")
		time.Sleep(time.Second)
		released := time.Now()
		require.NoError(t, la.Release(ctxFor(t, wait)))
		assert.LessOrEqual(t, (<-got).Sub(released), handOver, "granted as the holder let go")
		// A replica a had not released yet when b asked is taken again
		// within the re-take's backoff for a busy one (up to 200 ms).
		assert.LessOrEqual(t, pollVirtual(time.Minute, func() bool { return len(lb.HeldOn()) == 3 }), 200*time.Millisecond)
		assert.Equal(t, addrs, lb.HeldOn())
		require.NoError(t, lb.Release(ctxFor(t, wait)))
		synctest.Wait()
		for _, srv := range srvs {
			assert.False(t, keyHeld(srv, "k"))
		}
	})
}

// One replica's server dying is not a loss; it is taken again when the
// server comes back, empty. Two dying is, at once.
func TestReplicatedLockSurvivesOneServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, addrs := replicated(t, 5, 3, "k")
		var losses atomic.Int64
		a := f.client(t, lock.Config{Replicas: 3})
		lock.SetLossHook(a, func(lock.LossReport) { losses.Add(1) })
		b := f.client(t, lock.Config{Replicas: 3})
		la := a.Lock("k", lock.LeaseTTL(time.Second))
		mustAcquire(t, la)
		synctest.Wait()
		require.Len(t, la.HeldOn(), 3)
		first := la.Token()

		require.NoError(t, srvs[0].Stop())
		synctest.Wait()
		assert.Equal(t, addrs[1:], la.HeldOn())
		second := la.Token()
		assert.NotEmpty(t, second)
		assert.NotEqual(t, first, second, "the first replica's token went with it")
		require.False(t, gotLost(la.Lost()), "%v", la.Err())
		// Renewed past its lease, many times over, on the two left.
		time.Sleep(10 * time.Second)
		assert.Equal(t, second, la.Token())
		ok, err := b.Lock("k").TryAcquire(ctxFor(t, wait))
		require.NoError(t, err)
		assert.False(t, ok, "a still holds a quorum")

		require.NoError(t, srvs[0].Restart())
		// Within the pool's dial backoff (up to 2 s after failures in a
		// row) and the re-take's (up to 1 s), with jitter.
		took := pollVirtual(time.Minute, func() bool { return len(la.HeldOn()) == 3 })
		assert.LessOrEqual(t, took, 3*time.Second, "taken again on the restarted server")
		assert.Equal(t, addrs, la.HeldOn())
		assert.Equal(t, second, la.Token(), "the token stays while its replica is held")

		require.NoError(t, srvs[1].Stop())
		require.NoError(t, srvs[2].Stop())
		stopped := time.Now()
		<-la.Lost()
		assert.Equal(t, stopped, time.Now(), "two of three replicas gone: lost at once")
		assert.ErrorIs(t, la.Err(), lock.ErrLockLost)
		assert.Equal(t, int64(1), losses.Load())
		assert.Empty(t, la.Token())
		require.ErrorIs(t, la.Release(ctxFor(t, wait)), lock.ErrLockLost)
		synctest.Wait()
		assert.False(t, keyHeld(srvs[0], "k"), "the replica left is given back")
	})
}

// With the key's first replica down, the next one arbitrates: acquires
// keep working, one holder at a time.
func TestReplicatedLockWithItsFirstServerDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, addrs := replicated(t, 5, 3, "k")
		require.NoError(t, srvs[0].Stop())
		a := f.client(t, lock.Config{Replicas: 3})
		b := f.client(t, lock.Config{Replicas: 3})
		la, lb := a.Lock("k"), b.Lock("k")
		mustAcquire(t, la)
		assert.Equal(t, addrs[1:], la.HeldOn())
		got := make(chan bool, 1)
		go func() {
			ok, _ := lb.Acquire(context.Background())
			got <- ok
		}()
		synctest.Wait()
		assert.Equal(t, 1, waiters(srvs[1], "k"), "b waits on the second replica")
		time.Sleep(time.Second)
		released := time.Now()
		require.NoError(t, la.Release(ctxFor(t, wait)))
		assert.True(t, <-got)
		assert.LessOrEqual(t, time.Since(released), handOver, "granted as a let go")
		assert.Equal(t, addrs[1:], lb.HeldOn())
		require.NoError(t, lb.Release(ctxFor(t, wait)))
	})
}

// A try-lock that cannot reach a quorum says why, and gives back the one
// replica it took.
func TestReplicatedLockWithTooFewServers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, _ := replicated(t, 3, 3, "k")
		require.NoError(t, srvs[0].Stop())
		require.NoError(t, srvs[2].Stop())
		a := f.client(t, lock.Config{Replicas: 3})
		ok, err := a.Lock("k").TryAcquire(ctxFor(t, wait))
		assert.False(t, ok)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "only 1 of 3 replicas available (2 unreachable or silent), 2 needed")
		synctest.Wait()
		assert.False(t, keyHeld(srvs[1], "k"), "the one replica taken is given back")
	})
}

// Two clients that each take a minority of the replicas at once must not
// wait on each other: 640 rounds of contention, none overlapping, each
// settled well within the acquire timeout.
func TestReplicatedContentionSettles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _, _ := replicated(t, 5, 3, "k")
		h := newHistory()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var longest time.Duration
		for ci := range 4 {
			c := f.client(t, lock.Config{Replicas: 3})
			for wi := range 4 {
				wg.Go(func() {
					for range 40 {
						l := c.Lock("k", lock.AcquireTimeout(5*time.Second))
						t0 := time.Now()
						ok, err := l.Acquire(context.Background())
						if !assert.NoError(t, err) || !assert.True(t, ok) {
							return
						}
						mu.Lock()
						longest = max(longest, time.Since(t0))
						mu.Unlock()
						claim := h.hold(l, 0, fmt.Sprintf("c%d/w%d", ci, wi))
						time.Sleep(time.Millisecond)
						claim.finish(h.now(), false)
						assert.NoError(t, l.Release(context.Background()))
					}
				})
			}
		}
		wg.Wait()
		assert.Empty(t, h.violations())
		assert.Equal(t, 640, h.count())
		t.Logf("longest acquire: %v of virtual time", longest)
		// Sixteen workers that hold for 1 ms each: an acquire waits for
		// the others' holds, never for a timeout.
		assert.Less(t, longest, 100*time.Millisecond, "an acquire waited for a timeout: contenders waited on each other")
	})
}

// handOver bounds, in virtual time, how long after a holder's release a
// replicated waiter holds the lock: the waiter's try-locks on the other
// replicas may reach them before the release does, and are sent again
// after pauses from 0.5 ms, doubling. A timeout would take far longer.
const handOver = 10 * time.Millisecond

// pollVirtual waits, in a bubble, until cond holds or limit passes,
// looking each virtual millisecond once the bubble is idle, and returns
// how long that took: for what happens after a backoff with jitter,
// where no exact time can be asserted.
func pollVirtual(limit time.Duration, cond func() bool) time.Duration {
	t0 := time.Now()
	synctest.Wait()
	for !cond() && time.Since(t0) < limit {
		time.Sleep(time.Millisecond)
		synctest.Wait()
	}
	return time.Since(t0)
}

// keyHeld reports whether srv has a holder of the lock key.
func keyHeld(srv *fakeserver.Server, key string) bool {
	for _, li := range srv.Stats().Locks {
		if li.Key == key && li.OwnerConnID != 0 {
			return true
		}
	}
	return false
}

// The acceptance run: R=3 over 5 servers while one server at a time is
// killed, restarted empty, stalled past the lease or cut off by a
// blackhole, in virtual time (40 s of it per case, 3 or 4 faults of each
// kind; 15 s with -short; DFLOCK_SOAK sets another). A single server's fault releases no
// lock anywhere that counts, so nothing overlaps, not even in the
// close-detection window, and no loss is false.
//
// With quorum < replicas a holder of every replica keeps a quorum through
// one fault. With quorum == replicas (a semaphore of 2 or of 5 on 3
// replicas needs all 3) one fault does cost the lock, as on one server;
// but unlike one server, the others cannot hand it on: a successor needs
// every replica, and the lost holder keeps its replicas on the other
// servers until its client has declared the loss. So even there, in the
// logical order with claims ending at the declaration, no claim may
// overlap another; an overlap would be a client giving a replica back
// before it declared the loss, or a declaration that came too late.
func TestReplicatedMutualExclusionUnderFaults(t *testing.T) {
	all := []fault{killFault, restartFault, stallFault, blackholeFault}
	d := soakDuration(t, 40*time.Second, 15*time.Second)
	for _, c := range []struct {
		name            string
		limit, replicas int
	}{{"lock", 0, 3}, {"semaphore of 1", 1, 3}, {"semaphore of 2", 2, 3}, {"semaphore of 5", 5, 3}, {"semaphore of 2 on 5 replicas", 2, 5}} {
		t.Run(c.name, func(t *testing.T) {
			s := stress{
				clients: 3, workers: 6, keys: 4, limit: c.limit, lease: time.Second, duration: d, think: 50 * time.Millisecond,
				servers: 5, replicas: c.replicas, proxied: true, settle: 1500 * time.Millisecond, faults: all,
			}
			res := s.run(t)
			assert.GreaterOrEqual(t, res.virtual, d)
			assert.Positive(t, res.acquired)
			assert.GreaterOrEqual(t, res.faults, int64(len(all)), "every kind of fault")
			assert.Zero(t, res.falseLosses, "a lock reported lost while a quorum of its servers still held it, with no fault")
			assert.Zero(t, res.unmatched, "a holder saw a loss its client never declared")
			assert.Empty(t, res.violations, "a single server's fault must not let two holders overlap")
			if lock.Quorum(c.replicas, max(c.limit, 1)) < c.replicas {
				// One server's fault leaves a quorum to every holder that
				// held all its replicas. (One that held a bare quorum, say
				// taken while its first replica was down, may lose it.)
				assert.Zero(t, res.lossesFromFull, "a single server's fault cost a holder of every replica its lock")
			}
		})
	}
}

// Two-phase on replicas: Enqueue queues on the arbiter alone, a Wait
// that times out leaves nothing anywhere after exactly its timeout, one
// woken by a release gets the lock within a hand-over and every replica
// soon after, and Close withdraws a queued handle.
func TestReplicatedTwoPhase(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, addrs := replicated(t, 5, 3, "k")
		a := f.client(t, lock.Config{Replicas: 3})
		b := f.client(t, lock.Config{Replicas: 3})

		la := a.Lock("k")
		st, err := la.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		assert.Equal(t, lock.Acquired, st, "a free key is taken at once")
		ok, err := la.Wait(ctxFor(t, wait), time.Second)
		require.NoError(t, err)
		assert.True(t, ok)

		lb := b.Lock("k")
		st, err = lb.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		assert.Equal(t, lock.Queued, st)
		synctest.Wait()
		assert.Equal(t, 1, waiters(srvs[0], "k"), "queued on the arbiter")
		for _, srv := range srvs[1:] {
			assert.Zero(t, waiters(srv, "k"), "and nowhere else")
		}
		// Timed out: nothing of b's stays anywhere.
		t0 := time.Now()
		ok, err = lb.Wait(ctxFor(t, wait), time.Second)
		require.NoError(t, err)
		assert.False(t, ok)
		assert.Equal(t, time.Second, time.Since(t0), "the server's timeout, exactly")
		assert.Empty(t, lb.HeldOn())
		synctest.Wait()
		for _, srv := range srvs {
			assert.Zero(t, waiters(srv, "k"))
		}

		st, err = lb.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
		woke := make(chan time.Time, 1)
		go func() {
			ok, err := lb.Wait(ctxFor(t, wait), 5*time.Second)
			assert.NoError(t, err)
			assert.True(t, ok)
			woke <- time.Now()
		}()
		time.Sleep(time.Second)
		released := time.Now()
		require.NoError(t, la.Release(ctxFor(t, wait)))
		assert.LessOrEqual(t, (<-woke).Sub(released), handOver, "woken as a let go")
		assert.NotEmpty(t, lb.Token())
		assert.LessOrEqual(t, pollVirtual(time.Minute, func() bool { return len(lb.HeldOn()) == 3 }), 200*time.Millisecond)
		assert.Equal(t, addrs, lb.HeldOn())
		require.NoError(t, lb.Release(ctxFor(t, wait)))
		synctest.Wait()
		for _, srv := range srvs {
			assert.False(t, keyHeld(srv, "k"))
			assert.Zero(t, waiters(srv, "k"))
		}

		// Closing a queued handle withdraws it.
		mustAcquire(t, la)
		lc := b.Lock("k")
		st, err = lc.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
		require.NoError(t, lc.Close())
		require.NoError(t, la.Release(ctxFor(t, wait)))
		synctest.Wait()
		for _, srv := range srvs {
			assert.False(t, keyHeld(srv, "k"), "the withdrawn enqueue took nothing")
		}
	})
}

// A semaphore keeps its limit across replicas: with 5 replicas and 2
// slots a holder needs 4 of them, so no third holder fits; the third
// waits its whole timeout, and gets a slot once one is let go.
func TestReplicatedSemaphoreLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _, _ := replicated(t, 5, 5, "s")
		var held []*lock.Semaphore
		for range 2 {
			c := f.client(t, lock.Config{Replicas: 5})
			s := c.Semaphore("s", 2)
			mustAcquire(t, s)
			held = append(held, s)
		}
		c := f.client(t, lock.Config{Replicas: 5})
		third := c.Semaphore("s", 2, lock.AcquireTimeout(time.Second))
		t0 := time.Now()
		ok, err := third.Acquire(ctxFor(t, wait))
		require.NoError(t, err)
		assert.False(t, ok, "a third holder of a semaphore of 2")
		assert.Equal(t, time.Second, time.Since(t0), "after its acquire timeout, exactly")
		require.NoError(t, held[0].Release(ctxFor(t, wait)))
		mustAcquire(t, third)
		require.NoError(t, third.Release(ctxFor(t, wait)))
		require.NoError(t, held[1].Release(ctxFor(t, wait)))
	})
}

// WithLock's context ends when the replicated lock loses its quorum, at
// that moment, not when one replica goes.
func TestReplicatedWithLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, _ := replicated(t, 3, 3, "k")
		c := f.client(t, lock.Config{Replicas: 3})
		err := c.WithLock(ctxFor(t, 5*time.Minute), "k", func(ctx context.Context) error {
			require.NoError(t, srvs[2].Stop())
			select {
			case <-ctx.Done():
				return errors.New("cancelled for one replica")
			case <-time.After(time.Minute):
			}
			require.NoError(t, srvs[1].Stop())
			stopped := time.Now()
			select {
			case <-ctx.Done():
				assert.Equal(t, stopped, time.Now(), "cancelled as the quorum went")
				assert.ErrorIs(t, context.Cause(ctx), lock.ErrLockLost)
				return nil
			case <-time.After(wait):
				return errors.New("not cancelled when the quorum went")
			}
		})
		assert.ErrorIs(t, err, lock.ErrLockLost)
	})
}

// A stalled first replica costs the first acquire the replica timeout,
// exactly; the next ones, over the two seconds after, go on without
// waiting for it at all, and send it a probe per replica timeout rather
// than a pile.
func TestReplicatedLockWithItsFirstServerStalled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, addrs := replicated(t, 5, 3, "k")
		proxy := testproxy.StartWith(t, addrs[0], testproxy.Config{Listen: f.mem.Net.Listen, Dial: f.mem.Net.Dial})
		servers := slices.Clone(f.addrs)
		servers[slices.Index(servers, addrs[0])] = proxy.Addr()
		const replicaTimeout = time.Second
		c := f.client(t, lock.Config{Servers: servers, Replicas: 3, ReplicaTimeout: replicaTimeout})
		mustAcquire(t, c.Lock("warm-up")) // connections up
		synctest.Wait()                   // and every replica's answer in
		srvs[0].Stall(time.Hour)
		t.Cleanup(srvs[0].Unstall)
		before := proxy.Requests()

		l := c.Lock("k")
		t0 := time.Now()
		mustAcquire(t, l)
		assert.Equal(t, replicaTimeout, time.Since(t0), "waited a replica timeout for the first replica")
		require.NoError(t, l.Release(ctxFor(t, wait)))
		for range 20 {
			t1 := time.Now()
			mustAcquire(t, l)
			assert.Zero(t, time.Since(t1), "waited for the stalled server")
			assert.Equal(t, addrs[1:], l.HeldOn())
			require.NoError(t, l.Release(ctxFor(t, wait)))
			synctest.Wait()
			// One request per replica timeout: a pile would be one per
			// acquire.
			sent := proxy.Requests() - before
			assert.LessOrEqual(t, sent, 1+int64(time.Since(t0)/replicaTimeout), "requests piled up on the stalled server after %v", time.Since(t0))
			time.Sleep(100 * time.Millisecond)
		}
		assert.GreaterOrEqual(t, proxy.Requests()-before, int64(2), "a probe asks it again")
	})
}

// Client.Close gives back every replica of every lock, held or queued,
// and ends acquires in flight with ErrClosed at once.
func TestReplicatedClientClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 5, fakeserver.Config{DisableAutoRelease: true})
		a := f.client(t, lock.Config{Replicas: 3})
		b := f.client(t, lock.Config{Replicas: 3})
		for i := range 10 {
			mustAcquire(t, a.Lock(fmt.Sprintf("k%d", i)))
		}
		q := a.Lock("q")
		mustAcquire(t, b.Lock("q"))
		st, err := q.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
		// Blocked on b's lock; b is not giving it up.
		done := make(chan error, 1)
		go func() {
			_, err := a.Lock("q").Acquire(context.Background())
			done <- err
		}()
		synctest.Wait()
		n := 0
		for i := range f.addrs {
			n += waiters(f.server(t, i), "q")
		}
		require.Equal(t, 2, n, "the enqueue and the acquire wait")

		closing := time.Now()
		require.NoError(t, a.Close())
		assert.ErrorIs(t, <-done, lock.ErrClosed)
		assert.Equal(t, closing, time.Now(), "Close and the acquire it ends take no time")
		for i := range f.addrs {
			srv := f.server(t, i)
			for _, li := range srv.Stats().Locks {
				// Only b's lock on q is left, on its replicas.
				assert.Equal(t, "q", li.Key, "%s still held on %s", li.Key, srv.Addr())
			}
		}
	})
}

// A replica busy when the lock is taken, whose answer comes after
// Acquire returned, is taken within the re-take's backoff once it is
// free.
func TestReplicaBusyAtAcquireIsTakenLater(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, addrs := replicated(t, 5, 3, "k")
		other := f.client(t, lock.Config{Servers: addrs[2:3]})
		third := other.Lock("k")
		mustAcquire(t, third)

		c := f.client(t, lock.Config{Replicas: 3})
		l := c.Lock("k")
		mustAcquire(t, c.Lock("warm-up"))
		// The third replica answers busy only after Acquire returned.
		srvs[2].Stall(200 * time.Millisecond)
		mustAcquire(t, l)
		assert.Equal(t, addrs[:2], l.HeldOn())
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		assert.Zero(t, srvs[2].Busy(), "the stalled try-lock answered")
		assert.Equal(t, addrs[:2], l.HeldOn(), "busy")
		require.NoError(t, third.Release(ctxFor(t, wait)))
		// Within the re-take's backoff for a busy replica (at most
		// 200 ms, with jitter).
		took := pollVirtual(time.Minute, func() bool { return len(l.HeldOn()) == 3 })
		assert.LessOrEqual(t, took, 200*time.Millisecond, "the third replica was never taken")
		assert.Equal(t, addrs, l.HeldOn())
	})
}

// Release returns once a quorum of replicas is released and the others
// answered or had the replica timeout to, exactly: a stalled one is
// released in the background.
func TestReplicatedReleaseDoesNotWaitForAStalledReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, _ := replicated(t, 5, 3, "k")
		c := f.client(t, lock.Config{Replicas: 3})
		l := c.Lock("k")
		mustAcquire(t, l)
		synctest.Wait()
		require.Len(t, l.HeldOn(), 3)
		srvs[1].Stall(time.Hour)
		t.Cleanup(srvs[1].Unstall)
		t0 := time.Now()
		require.NoError(t, l.Release(ctxFor(t, wait)))
		assert.Equal(t, lock.DefaultReplicaTimeout, time.Since(t0), "one replica timeout for the stalled replica")
	})
}

// A waiter queued on the arbiter moves on when the arbiter's server dies
// or drains (at once) or stalls (within a few replica timeouts): the next
// replica arbitrates, and it gets the lock within a hand-over of the
// holder letting go.
func TestReplicatedWaiterSurvivesItsArbiter(t *testing.T) {
	for _, c := range []struct {
		fault    string
		twoPhase bool
	}{{"killed", false}, {"stalled", false}, {"draining", false}, {"killed", true}, {"stalled", true}, {"draining", true}} {
		name := c.fault
		if c.twoPhase {
			name += ", two-phase"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { waiterSurvivesItsArbiter(t, c.fault, c.twoPhase) })
		})
	}
}

func waiterSurvivesItsArbiter(t *testing.T, fault string, twoPhase bool) {
	f, srvs, _ := replicated(t, 5, 3, "k")
	a := f.client(t, lock.Config{Replicas: 3})
	const replicaTimeout = 200 * time.Millisecond
	b := f.client(t, lock.Config{Replicas: 3, ReplicaTimeout: replicaTimeout})
	la := a.Lock("k")
	mustAcquire(t, la)
	synctest.Wait()
	require.Len(t, la.HeldOn(), 3)
	got := make(chan error, 1)
	var grantedAt time.Time
	lb := b.Lock("k", lock.AcquireTimeout(20*time.Second))
	if twoPhase {
		st, err := lb.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
	}
	go func() {
		var ok bool
		var err error
		if twoPhase {
			ok, err = lb.Wait(context.Background(), 20*time.Second)
		} else {
			ok, err = lb.Acquire(context.Background())
		}
		if err == nil && !ok {
			err = errors.New("not acquired")
		}
		grantedAt = time.Now()
		got <- err
	}()
	synctest.Wait()
	require.Equal(t, 1, waiters(srvs[0], "k"))
	switch fault {
	case "killed":
		require.NoError(t, srvs[0].Stop())
	case "stalled":
		srvs[0].Stall(time.Hour)
		t.Cleanup(srvs[0].Unstall)
	case "draining":
		// SIGTERM: waits are refused ("error"), try-locks still
		// answered, until the connections close.
		ctx, cancel := context.WithCancel(context.Background())
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			srvs[0].Shutdown(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-drained
		})
	}
	// b now waits on the second replica, which a holds: at once when
	// the arbiter closes its connections or refuses the wait, within a
	// few replica timeouts when it stalls (its pings go unanswered).
	took := pollVirtual(time.Minute, func() bool { return waiters(srvs[1], "k") == 1 })
	require.Equal(t, 1, waiters(srvs[1], "k"))
	if fault == "stalled" {
		assert.LessOrEqual(t, took, 3*replicaTimeout)
	} else {
		assert.Zero(t, took)
	}
	time.Sleep(time.Second)
	released := time.Now()
	require.NoError(t, la.Release(ctxFor(t, wait)))
	require.NoError(t, <-got)
	within := handOver
	if fault == "stalled" {
		// Its round may wait a replica timeout for a probe of the stalled
		// server.
		within += replicaTimeout
	}
	assert.LessOrEqual(t, grantedAt.Sub(released), within, "granted as the holder let go")
	if fault != "draining" {
		// (A draining server still grants try-locks: a probe may
		// take its replica.)
		assert.NotContains(t, lb.HeldOn(), srvs[0].Addr())
	}
	require.NoError(t, lb.Release(ctxFor(t, wait)))
}
