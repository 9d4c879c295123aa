package lock_test

import (
	"bufio"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/memnet"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// Hazard 4: enqueue and wait share one pinned connection. A Wait on any
// other connection would get error_not_enqueued; a grant proves they met.
// The holder lets go 50 ms into the Wait, which returns then.
func TestTwoPhaseQueued(t *testing.T) {
	onTimedFleet(t, 1, fakeserver.Config{}, func(t *testing.T, f *testFleet) {
		c := f.client(t, lock.Config{})
		key := uniqueKey(t, "k")
		holder := c.Lock(key)
		mustAcquire(t, holder)

		l := c.Lock(key, lock.LeaseTTL(4*time.Second))
		st, err := l.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
		assert.Equal(t, "queued", st.String())
		assert.Equal(t, "", l.Token())
		_, err = l.Enqueue(ctxFor(t, wait))
		assert.ErrorIs(t, err, lock.ErrAlreadyEnqueued)
		_, err = l.Acquire(ctxFor(t, wait))
		assert.ErrorIs(t, err, lock.ErrAlreadyEnqueued)

		// Other work goes on meanwhile: the pinned connection is the
		// enqueuer's alone.
		other := c.Lock(uniqueKey(t, "other"))
		ok, err := other.TryAcquire(ctxFor(t, wait))
		require.NoError(t, err)
		require.True(t, ok)

		released := make(chan error, 1)
		go func() {
			time.Sleep(50 * time.Millisecond)
			released <- holder.Release(context.Background())
		}()
		began := time.Now()
		ok, err = l.Wait(ctxFor(t, wait), 5*time.Second)
		require.NoError(t, err)
		require.True(t, ok)
		assertTook(t, f, 50*time.Millisecond, began, "granted on the release")
		// The server granted l on the release; its answer may still be on
		// the way back, and the client must not close under it.
		require.NoError(t, <-released)
		assert.Equal(t, 4*time.Second, l.Lease())
		require.NoError(t, l.Release(ctxFor(t, wait)))

		ok, err = l.Wait(ctxFor(t, wait), time.Second)
		assert.ErrorIs(t, err, lock.ErrNotEnqueued)
		assert.False(t, ok)
	})
}

// Enqueue on a free key acquires at once and renewal starts; Wait then
// returns true without a round trip (at once, against a stalled server),
// and the lock is renewed for minutes past its 30 s lease.
func TestTwoPhaseAcquiredAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		c := f.client(t, lock.Config{})
		const lease = 30 * time.Second
		l := c.Lock(uniqueKey(t, "k"), lock.LeaseTTL(lease))
		st, err := l.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Acquired, st)
		tok := l.Token()
		require.NotEmpty(t, tok)

		srv.Stall(time.Hour)
		began := time.Now()
		ok, err := l.Wait(ctxFor(t, 50*time.Millisecond), time.Second)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Zero(t, time.Since(began), "no round trip")
		srv.Unstall()

		time.Sleep(4*lease + time.Second)
		synctest.Wait()
		assert.Equal(t, tok, l.Token())
		ts := srv.TokenState(l.Key(), tok)
		assert.True(t, ts.Held)
		assert.Greater(t, ts.LeaseLeft, lease/2, "renewed at half its lease")
		assert.Equal(t, uint64(8), c.RenewalsSent(), "one renewal per 15 s")
		// The registration was consumed: the connection is clean for the
		// next enqueue of the same key on it.
		require.NoError(t, l.Release(ctxFor(t, wait)))
		st, err = l.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		assert.Equal(t, lock.Acquired, st)
	})
}

// A queued Wait whose timeout passes returns false, not an error, at its
// timeout (30 s, past the server's 23 s read timeout, in virtual time),
// and gives up its place in the queue: a release makes the key free.
func TestTwoPhaseWaitTimesOut(t *testing.T) {
	onTimedFleet(t, 1, fakeserver.Config{}, func(t *testing.T, f *testFleet) {
		c := f.client(t, lock.Config{})
		key := uniqueKey(t, "k")
		holder := c.Lock(key)
		mustAcquire(t, holder)
		l := c.Lock(key)
		st, err := l.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
		timeout := 30 * time.Second
		if f.mem == nil {
			timeout = time.Second // real time
		}
		began := time.Now()
		ok, err := l.Wait(ctxFor(t, 2*timeout), timeout)
		require.NoError(t, err)
		assert.False(t, ok)
		assertTook(t, f, timeout, began, "waited out its timeout")
		// The place in the queue is gone: a release makes the key free.
		require.NoError(t, holder.Release(ctxFor(t, wait)))
		ok, err = c.Lock(key).TryAcquire(ctxFor(t, wait))
		require.NoError(t, err)
		assert.True(t, ok)
	})
}

func TestTwoPhaseCloseWithdraws(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	key := uniqueKey(t, "k")
	holder := c.Lock(key)
	_, err := holder.Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	sem := c.Semaphore(key+"s", 1)
	_, err = sem.Acquire(ctxFor(t, wait))
	require.NoError(t, err)

	l, s := c.Lock(key), c.Semaphore(key+"s", 1)
	for _, e := range []interface {
		Enqueue(context.Context) (lock.Status, error)
	}{l, s} {
		st, err := e.Enqueue(ctxFor(t, wait))
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
	}
	require.NoError(t, l.Close())
	require.NoError(t, s.Close())
	require.NoError(t, holder.Release(ctxFor(t, wait)))
	require.NoError(t, sem.Release(ctxFor(t, wait)))
	for _, k := range []string{key} {
		ok, err := c.Lock(k).TryAcquire(ctxFor(t, wait))
		require.NoError(t, err)
		assert.True(t, ok, "the withdrawn enqueue did not take %s", k)
	}
	ok, err := c.Semaphore(key+"s", 1).TryAcquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.True(t, ok)
}

// Hazard 2: cancelling a blocked acquire never costs another lock: the
// wait runs on a connection that holds nothing, and the lock a is granted
// after a wait keeps its connection to itself. The given-up wait's
// connection stays until the server answers it; the grant it then gets
// is released at once, so b comes free with its holder's release.
func TestCancelledAcquireKeepsOtherLocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		// Two exclusive connections: a keeps one, b's wait takes the other.
		c := f.client(t, lock.Config{Pool: pool.Config{MaxConns: 3, SharedConns: 1}})
		other := f.client(t, lock.Config{})
		a, b := uniqueKey(t, "a"), uniqueKey(t, "b")

		// a is taken by a blocking acquire, so it lives on the exclusive
		// connection.
		first := other.Lock(a)
		mustAcquire(t, first)
		la := c.Lock(a)
		got := make(chan bool, 1)
		go func() {
			ok, err := la.Acquire(ctxFor(t, wait))
			assert.NoError(t, err)
			got <- ok
		}()
		synctest.Wait()
		require.Equal(t, 1, waiters(srv, a))
		require.NoError(t, first.Release(ctxFor(t, wait)))
		require.True(t, <-got)
		owner := srv.Stats().Locks[0].OwnerConnID

		hb := other.Lock(b)
		mustAcquire(t, hb)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Lock(b).Acquire(ctx)
			errc <- err
		}()
		synctest.Wait()
		require.Equal(t, 1, waiters(srv, b))
		cancel()
		assert.ErrorIs(t, <-errc, context.Canceled)

		assert.NotEmpty(t, la.Token())
		for _, li := range srv.Stats().Locks {
			if li.Key == a {
				assert.Equal(t, owner, li.OwnerConnID, "a still held by the same connection")
			}
		}
		assert.False(t, gotLost(la.Lost()), "a was lost")
		require.NoError(t, hb.Release(ctxFor(t, wait)))
		synctest.Wait()
		ok, err := other.Lock(b).TryAcquire(ctxFor(t, wait))
		require.NoError(t, err)
		assert.True(t, ok, "the grant to the given-up wait was released")
		assert.False(t, gotLost(la.Lost()), "a was lost")
	})
}

// Item 5 of issue 10: the acquire timeout bounds the wait for a free
// connection too, here while the only exclusive connection carries
// another caller's 30 s wait: a 300 ms acquire returns at 300 ms, not
// after the other wait.
func TestAcquireTimeoutBoundsTheWaitForAConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		other := f.client(t, lock.Config{})
		a, b := uniqueKey(t, "a"), uniqueKey(t, "b")
		for _, h := range []*lock.Lock{other.Lock(a), other.Lock(b)} {
			mustAcquire(t, h)
		}
		d := f.client(t, lock.Config{Pool: pool.Config{MaxConns: 2, SharedConns: 1}})
		waiting := make(chan struct{})
		go func() {
			defer close(waiting)
			began := time.Now()
			ok, err := d.Lock(b, lock.AcquireTimeout(30*time.Second)).Acquire(context.Background())
			assert.NoError(t, err)
			assert.False(t, ok)
			assert.Equal(t, 30*time.Second, time.Since(began), "the other wait")
		}()
		synctest.Wait()
		require.Equal(t, 1, waiters(srv, b))
		began := time.Now()
		ok, err := d.Lock(a, lock.AcquireTimeout(300*time.Millisecond)).Acquire(context.Background())
		require.NoError(t, err)
		assert.False(t, ok)
		assert.Equal(t, 300*time.Millisecond, time.Since(began), "returned at its timeout, not after the other wait")
		<-waiting
	})
}

// Hazard 7: timeouts go to the server in whole seconds, rounded up; the
// client still returns at its own timeout, or a sooner context deadline.
// A scripted server, in a synctest bubble, records the requests and
// answers "timeout" once the timeout it was sent has passed.
func TestTimeoutsAreWholeSecondsRoundedUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := memnet.New()
		ln, err := nw.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		var mu sync.Mutex
		var args []string
		var served sync.WaitGroup
		served.Go(func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				served.Go(func() {
					defer nc.Close()
					br := bufio.NewReader(nc)
					for {
						var lines [3]string
						for i := range lines {
							if lines[i], err = br.ReadString('\n'); err != nil {
								return
							}
						}
						if strings.TrimSpace(lines[0]) == "r" {
							// A keep-alive, or the ping at a wait's end:
							// no such lock.
							if _, err := nc.Write([]byte("error\n")); err != nil {
								return
							}
							continue
						}
						arg := strings.TrimSpace(lines[2])
						mu.Lock()
						args = append(args, arg)
						mu.Unlock()
						timeout, _, _ := strings.Cut(arg, " ")
						secs, err := strconv.Atoi(timeout)
						if err != nil {
							return
						}
						time.Sleep(time.Duration(secs) * time.Second)
						if _, err := nc.Write([]byte("timeout\n")); err != nil {
							return
						}
					}
				})
			}
		})
		c, err := lock.New(lock.Config{Servers: []string{ln.Addr().String()}, Pool: pool.Config{Dial: nw.Dial}})
		require.NoError(t, err)

		began := time.Now()
		ok, err := c.Lock("k", lock.AcquireTimeout(1500*time.Millisecond), lock.LeaseTTL(2500*time.Millisecond)).Acquire(context.Background())
		require.NoError(t, err)
		assert.False(t, ok)
		assert.Equal(t, 1500*time.Millisecond, time.Since(began), "1.5 s asked as 2, given up at 1.5")

		began = time.Now()
		_, err = c.Lock("k").Acquire(ctxFor(t, 300*time.Millisecond))
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 300*time.Millisecond, time.Since(began), "the context deadline wins")

		began = time.Now()
		ok, err = c.Lock("k", lock.AcquireTimeout(200*time.Millisecond)).Acquire(context.Background())
		require.NoError(t, err)
		assert.False(t, ok)
		assert.Equal(t, 200*time.Millisecond, time.Since(began), "200 ms asked as 1 s, given up at 200 ms")
		require.NoError(t, c.Close())
		ln.Close()
		served.Wait()
		// try-lock, then the blocking request; lease 2.5 s → 3; 1.5 s → 2;
		// 300 ms of context → 1; 200 ms → 1.
		assert.Equal(t, []string{"0 3", "2 3", "0", "1", "0", "1"}, args)
	})
}

// Wait with no timeout waits for the handle's AcquireTimeout, as Python's
// wait() does with acquire_timeout_s; a negative one is refused.
func TestWaitTimeoutDefaultsToTheAcquireTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		holder, c := f.client(t, lock.Config{}), f.client(t, lock.Config{})
		k := uniqueKey(t, "k")
		mustAcquire(t, holder.Lock(k))
		l := c.Lock(k, lock.AcquireTimeout(300*time.Millisecond))
		_, err := l.Wait(context.Background(), -time.Second)
		require.ErrorIs(t, err, lock.ErrInvalid)
		st, err := l.Enqueue(context.Background())
		require.NoError(t, err)
		require.Equal(t, lock.Queued, st)
		began := time.Now()
		ok, err := l.Wait(context.Background(), 0)
		require.NoError(t, err)
		assert.False(t, ok)
		assert.Equal(t, 300*time.Millisecond, time.Since(began))
	})
}
