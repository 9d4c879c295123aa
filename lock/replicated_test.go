package lock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testproxy"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/shard"
)

// replicated starts n fakeservers and returns them with the key's R
// replicas' servers, in replica order.
func replicated(t *testing.T, n, r int, key string) (*testFleet, []*fakeserver.Server, []string) {
	t.Helper()
	f := newFleet(t, n, fakeserver.Config{LeaseSweepInterval: 50 * time.Millisecond})
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

func TestReplicatedLockHeldOnEveryReplica(t *testing.T) {
	f, srvs, addrs := replicated(t, 5, 3, "k")
	a := f.client(t, lock.Config{Replicas: 3})
	b := f.client(t, lock.Config{Replicas: 3})

	la := a.Lock("k")
	mustAcquire(t, la)
	assert.NotEmpty(t, la.Token())
	// The last replica's answer may come after Acquire returned.
	require.Eventually(t, func() bool { return len(la.HeldOn()) == 3 }, wait, time.Millisecond)
	assert.Equal(t, addrs, la.HeldOn())
	for _, srv := range srvs {
		assert.True(t, keyHeld(srv, "k"), "every replica holds the key")
	}

	lb := b.Lock("k", lock.AcquireTimeout(5*time.Second))
	ok, err := lb.TryAcquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.False(t, ok, "held by a")

	got := make(chan error, 1)
	go func() {
		ok, err := lb.Acquire(context.Background())
		if err == nil && !ok {
			err = errors.New("not acquired")
		}
		got <- err
	}()
	// b waits on the arbiter (the key's first replica) and holds nothing.
	require.Eventually(t, func() bool { return waiters(srvs[0], "k") == 1 }, wait, time.Millisecond)
	require.NoError(t, la.Release(ctxFor(t, wait)))
	require.NoError(t, <-got)
	require.Eventually(t, func() bool { return len(lb.HeldOn()) == 3 }, wait, time.Millisecond)
	require.NoError(t, lb.Release(ctxFor(t, wait)))
	for _, srv := range srvs {
		assert.Eventually(t, func() bool { return !keyHeld(srv, "k") }, wait, time.Millisecond)
	}
}

// One replica's server dying is not a loss; it is taken again when the
// server comes back, empty. Two dying is.
func TestReplicatedLockSurvivesOneServer(t *testing.T) {
	f, srvs, addrs := replicated(t, 5, 3, "k")
	var losses atomic.Int64
	a := f.client(t, lock.Config{Replicas: 3})
	lock.SetLossHook(a, func(lock.LossReport) { losses.Add(1) })
	b := f.client(t, lock.Config{Replicas: 3})
	la := a.Lock("k", lock.LeaseTTL(time.Second))
	mustAcquire(t, la)
	require.Eventually(t, func() bool { return len(la.HeldOn()) == 3 }, wait, time.Millisecond)
	first := la.Token()

	require.NoError(t, srvs[0].Stop())
	require.Eventually(t, func() bool { return len(la.HeldOn()) == 2 }, wait, time.Millisecond)
	second := la.Token()
	assert.NotEmpty(t, second)
	assert.NotEqual(t, first, second, "the first replica's token went with it")
	require.False(t, gotLost(la.Lost()), "%v", la.Err())
	// Renewed past its lease on the two left.
	time.Sleep(1500 * time.Millisecond)
	assert.NotEmpty(t, la.Token())
	ok, err := b.Lock("k").TryAcquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.False(t, ok, "a still holds a quorum")

	require.NoError(t, srvs[0].Restart())
	require.Eventually(t, func() bool { return len(la.HeldOn()) == 3 }, 2*wait, 5*time.Millisecond, "taken again on the restarted server")
	assert.Equal(t, addrs, la.HeldOn())
	assert.Equal(t, second, la.Token(), "the token stays while its replica is held")

	require.NoError(t, srvs[1].Stop())
	require.NoError(t, srvs[2].Stop())
	select {
	case <-la.Lost():
	case <-time.After(wait):
		t.Fatal("two of three replicas gone, and the lock not reported lost")
	}
	assert.ErrorIs(t, la.Err(), lock.ErrLockLost)
	assert.Equal(t, int64(1), losses.Load())
	assert.Empty(t, la.Token())
	require.ErrorIs(t, la.Release(ctxFor(t, wait)), lock.ErrLockLost)
	assert.Eventually(t, func() bool { return !keyHeld(srvs[0], "k") }, wait, time.Millisecond, "the replica left is given back")
}

// With the key's first replica down, the next one arbitrates: acquires
// keep working, one holder at a time.
func TestReplicatedLockWithItsFirstServerDown(t *testing.T) {
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
	require.Eventually(t, func() bool { return waiters(srvs[1], "k") == 1 }, wait, time.Millisecond)
	require.NoError(t, la.Release(ctxFor(t, wait)))
	assert.True(t, <-got)
	require.NoError(t, lb.Release(ctxFor(t, wait)))
}

// A try-lock that cannot reach a quorum says why.
func TestReplicatedLockWithTooFewServers(t *testing.T) {
	f, srvs, _ := replicated(t, 3, 3, "k")
	require.NoError(t, srvs[0].Stop())
	require.NoError(t, srvs[2].Stop())
	a := f.client(t, lock.Config{Replicas: 3})
	ok, err := a.Lock("k").TryAcquire(ctxFor(t, wait))
	assert.False(t, ok)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "only 1 of 3 replicas available (2 unreachable or silent), 2 needed")
	assert.Eventually(t, func() bool { return !keyHeld(srvs[1], "k") }, wait, time.Millisecond, "the one replica taken is given back")
}

// Two clients that each take a minority of the replicas at once must not
// wait on each other: many rounds of contention, each settled well
// within the acquire timeout.
func TestReplicatedContentionSettles(t *testing.T) {
	f, _, _ := replicated(t, 5, 3, "k")
	h := newHistory()
	var wg sync.WaitGroup
	var slow atomic.Int64
	for ci := range 4 {
		c := f.client(t, lock.Config{Replicas: 3})
		for wi := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 40 {
					l := c.Lock("k", lock.AcquireTimeout(5*time.Second))
					t0 := time.Now()
					ok, err := l.Acquire(context.Background())
					if !assert.NoError(t, err) || !assert.True(t, ok) {
						return
					}
					if time.Since(t0) > 2*time.Second {
						slow.Add(1)
					}
					start := time.Now()
					end := time.Now()
					h.record("k", 1, fmt.Sprintf("c%d/w%d", ci, wi), start, end, false)
					assert.NoError(t, l.Release(context.Background()))
				}
			}()
		}
	}
	wg.Wait()
	assert.Empty(t, h.violations())
	assert.Equal(t, 640, h.count())
	assert.Zero(t, slow.Load(), "an acquire waited seconds: contenders waited on each other")
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
// blackhole, in virtual time (a minute of it per case; 15 s with
// -short; DFLOCK_SOAK sets another). A single server's fault releases no
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
	d := soakDuration(t, time.Minute, 15*time.Second)
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

func TestReplicatedTwoPhase(t *testing.T) {
	f, srvs, _ := replicated(t, 5, 3, "k")
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
	require.Eventually(t, func() bool { return waiters(srvs[0], "k") == 1 }, wait, time.Millisecond, "queued on the arbiter")
	for _, srv := range srvs[1:] {
		assert.Zero(t, waiters(srv, "k"), "and nowhere else")
	}
	// Timed out: nothing of b's stays anywhere.
	ok, err = lb.Wait(ctxFor(t, wait), time.Second)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Empty(t, lb.HeldOn())

	st, err = lb.Enqueue(ctxFor(t, wait))
	require.NoError(t, err)
	require.Equal(t, lock.Queued, st)
	require.NoError(t, la.Release(ctxFor(t, wait)))
	ok, err = lb.Wait(ctxFor(t, wait), 5*time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	assert.NotEmpty(t, lb.Token())
	assert.GreaterOrEqual(t, len(lb.HeldOn()), 2)
	require.NoError(t, lb.Release(ctxFor(t, wait)))
	for _, srv := range srvs {
		assert.Eventually(t, func() bool { return !keyHeld(srv, "k") && waiters(srv, "k") == 0 }, wait, time.Millisecond)
	}

	// Closing a queued handle withdraws it.
	mustAcquire(t, la)
	lc := b.Lock("k")
	st, err = lc.Enqueue(ctxFor(t, wait))
	require.NoError(t, err)
	require.Equal(t, lock.Queued, st)
	require.NoError(t, lc.Close())
	require.NoError(t, la.Release(ctxFor(t, wait)))
	for _, srv := range srvs {
		assert.Eventually(t, func() bool { return !keyHeld(srv, "k") }, wait, time.Millisecond, "the withdrawn enqueue took nothing")
	}
}

// A semaphore keeps its limit across replicas: with 5 replicas and 2
// slots a holder needs 4 of them, so no third holder fits.
func TestReplicatedSemaphoreLimit(t *testing.T) {
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
	ok, err := third.Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.False(t, ok, "a third holder of a semaphore of 2")
	require.NoError(t, held[0].Release(ctxFor(t, wait)))
	mustAcquire(t, third)
	require.NoError(t, third.Release(ctxFor(t, wait)))
	require.NoError(t, held[1].Release(ctxFor(t, wait)))
}

// WithLock's context ends when the replicated lock loses its quorum, not
// when one replica goes.
func TestReplicatedWithLock(t *testing.T) {
	f, srvs, _ := replicated(t, 3, 3, "k")
	c := f.client(t, lock.Config{Replicas: 3})
	err := c.WithLock(ctxFor(t, wait), "k", func(ctx context.Context) error {
		require.NoError(t, srvs[2].Stop())
		select {
		case <-ctx.Done():
			return errors.New("cancelled for one replica")
		case <-time.After(200 * time.Millisecond):
		}
		require.NoError(t, srvs[1].Stop())
		select {
		case <-ctx.Done():
			assert.ErrorIs(t, context.Cause(ctx), lock.ErrLockLost)
			return nil
		case <-time.After(wait):
			return errors.New("not cancelled when the quorum went")
		}
	})
	assert.ErrorIs(t, err, lock.ErrLockLost)
}

// A stalled first replica costs the first acquire the replica timeout;
// the next ones go on without waiting for it, and send it one request at
// a time, a probe, rather than a pile.
func TestReplicatedLockWithItsFirstServerStalled(t *testing.T) {
	f, srvs, addrs := replicated(t, 5, 3, "k")
	proxy := testproxy.Start(t, addrs[0], nil)
	servers := slices.Clone(f.addrs)
	servers[slices.Index(servers, addrs[0])] = proxy.Addr()
	c := f.client(t, lock.Config{Servers: servers, Replicas: 3, ReplicaTimeout: time.Second})
	mustAcquire(t, c.Lock("warm-up")) // connections up
	srvs[0].Stall(time.Hour)
	t.Cleanup(srvs[0].Unstall)
	before := proxy.Requests()

	l := c.Lock("k")
	mustAcquire(t, l) // waits a replica timeout for the first replica
	require.NoError(t, l.Release(ctxFor(t, wait)))
	for range 20 {
		ok, err := l.Acquire(ctxFor(t, 500*time.Millisecond))
		require.NoError(t, err, "waited for the stalled server")
		require.True(t, ok)
		assert.NotContains(t, l.HeldOn(), proxy.Addr())
		require.NoError(t, l.Release(ctxFor(t, wait)))
	}
	assert.LessOrEqual(t, proxy.Requests()-before, int64(3), "requests piled up on the stalled server")
}

// Client.Close gives back every replica of every lock, held or queued,
// and ends acquires in flight with ErrClosed.
func TestReplicatedClientClose(t *testing.T) {
	f := newFleet(t, 5, fakeserver.Config{DisableAutoRelease: true})
	a, err := lock.New(lock.Config{Servers: f.addrs, Replicas: 3})
	require.NoError(t, err)
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
	require.Eventually(t, func() bool {
		n := 0
		for i := range f.addrs {
			n += waiters(f.server(t, i), "q")
		}
		return n == 2
	}, wait, time.Millisecond)

	require.NoError(t, a.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, lock.ErrClosed)
	case <-time.After(wait):
		t.Fatal("an acquire in flight outlived Client.Close")
	}
	for i := range f.addrs {
		srv := f.server(t, i)
		for _, li := range srv.Stats().Locks {
			// Only b's lock on q is left, on its replicas.
			assert.Equal(t, "q", li.Key, "%s still held on %s", li.Key, srv.Addr())
		}
	}
}

// A replica busy when the lock is taken, whose answer comes after
// Acquire returned, is taken once it is free.
func TestReplicaBusyAtAcquireIsTakenLater(t *testing.T) {
	f, srvs, addrs := replicated(t, 5, 3, "k")
	other, err := lock.New(lock.Config{Servers: addrs[2:3]})
	require.NoError(t, err)
	defer other.Close()
	third := other.Lock("k")
	mustAcquire(t, third)

	c := f.client(t, lock.Config{Replicas: 3})
	l := c.Lock("k")
	mustAcquire(t, c.Lock("warm-up"))
	// The third replica answers busy only after Acquire returned.
	srvs[2].Stall(200 * time.Millisecond)
	mustAcquire(t, l)
	assert.Len(t, l.HeldOn(), 2)
	// The stalled try-lock answered busy: nothing is handling a request.
	require.Eventually(t, func() bool { return srvs[2].Busy() == 0 }, wait, time.Millisecond)
	require.NoError(t, third.Release(ctxFor(t, wait)))
	require.Eventually(t, func() bool { return len(l.HeldOn()) == 3 }, wait, 5*time.Millisecond, "the third replica was never taken")
}

// Release returns once a quorum of replicas is released and the others
// answered or had the replica timeout to: a stalled one is released in
// the background.
func TestReplicatedReleaseDoesNotWaitForAStalledReplica(t *testing.T) {
	f, srvs, _ := replicated(t, 5, 3, "k")
	c := f.client(t, lock.Config{Replicas: 3})
	l := c.Lock("k")
	mustAcquire(t, l)
	require.Eventually(t, func() bool { return len(l.HeldOn()) == 3 }, wait, time.Millisecond)
	srvs[1].Stall(time.Hour)
	t.Cleanup(srvs[1].Unstall)
	require.NoError(t, l.Release(ctxFor(t, 2*time.Second)))
}

// A waiter queued on the arbiter moves on when the arbiter's server dies
// or stalls: the next replica arbitrates, and it gets the lock when the
// holder lets go.
func TestReplicatedWaiterSurvivesItsArbiter(t *testing.T) {
	for _, c := range []struct {
		fault    string
		twoPhase bool
	}{{"killed", false}, {"stalled", false}, {"draining", false}, {"killed", true}, {"stalled", true}, {"draining", true}} {
		fault := c.fault
		name := fault
		if c.twoPhase {
			name += ", two-phase"
		}
		t.Run(name, func(t *testing.T) {
			f, srvs, _ := replicated(t, 5, 3, "k")
			a := f.client(t, lock.Config{Replicas: 3})
			b := f.client(t, lock.Config{Replicas: 3, ReplicaTimeout: 200 * time.Millisecond})
			la := a.Lock("k")
			mustAcquire(t, la)
			require.Eventually(t, func() bool { return len(la.HeldOn()) == 3 }, wait, time.Millisecond)
			got := make(chan error, 1)
			lb := b.Lock("k", lock.AcquireTimeout(20*time.Second))
			if c.twoPhase {
				st, err := lb.Enqueue(ctxFor(t, wait))
				require.NoError(t, err)
				require.Equal(t, lock.Queued, st)
			}
			go func() {
				var ok bool
				var err error
				if c.twoPhase {
					ok, err = lb.Wait(context.Background(), 20*time.Second)
				} else {
					ok, err = lb.Acquire(context.Background())
				}
				if err == nil && !ok {
					err = errors.New("not acquired")
				}
				got <- err
			}()
			require.Eventually(t, func() bool { return waiters(srvs[0], "k") == 1 }, wait, time.Millisecond)
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
			// b now waits on the second replica, which a holds.
			require.Eventually(t, func() bool { return waiters(srvs[1], "k") == 1 }, wait, time.Millisecond)
			require.NoError(t, la.Release(ctxFor(t, wait)))
			select {
			case err := <-got:
				require.NoError(t, err)
			case <-time.After(wait):
				t.Fatal("the waiter never got the lock")
			}
			if fault != "draining" {
				// (A draining server still grants try-locks: a probe may
				// take its replica.)
				assert.NotContains(t, lb.HeldOn(), srvs[0].Addr())
			}
			require.NoError(t, lb.Release(ctxFor(t, wait)))
		})
	}
}
