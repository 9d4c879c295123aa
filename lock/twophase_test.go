package lock_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// Hazard 4: enqueue and wait share one pinned connection. A Wait on any
// other connection would get error_not_enqueued; a grant proves they met.
func TestTwoPhaseQueued(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	key := uniqueKey(t, "k")
	holder := c.Lock(key)
	_, err := holder.Acquire(ctxFor(t, wait))
	require.NoError(t, err)

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
	ok, err = l.Wait(ctxFor(t, wait), 5*time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	// The server granted l on the release; its answer may still be on
	// the way back, and the client must not close under it.
	require.NoError(t, <-released)
	assert.Equal(t, 4*time.Second, l.Lease())
	require.NoError(t, l.Release(ctxFor(t, wait)))

	ok, err = l.Wait(ctxFor(t, wait), time.Second)
	assert.ErrorIs(t, err, lock.ErrNotEnqueued)
	assert.False(t, ok)
}

// Enqueue on a free key acquires at once, renewal starts, and Wait returns
// true without a round trip (it works against a stalled server).
func TestTwoPhaseAcquiredAtOnce(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	srv := f.server(t, 0)
	c := f.client(t, lock.Config{})
	l := c.Lock(uniqueKey(t, "k"), lock.LeaseTTL(time.Second), lock.RenewRatio(0.3))
	st, err := l.Enqueue(ctxFor(t, wait))
	require.NoError(t, err)
	require.Equal(t, lock.Acquired, st)
	tok := l.Token()
	require.NotEmpty(t, tok)

	srv.Stall(time.Minute)
	ok, err := l.Wait(ctxFor(t, 50*time.Millisecond), time.Second)
	require.NoError(t, err)
	assert.True(t, ok)
	srv.Unstall()

	// Renewed past its 1 s lease.
	time.Sleep(1500 * time.Millisecond)
	assert.Equal(t, tok, l.Token())
	// The registration was consumed: the connection is clean for the next
	// enqueue of the same key on it.
	require.NoError(t, l.Release(ctxFor(t, wait)))
	st, err = l.Enqueue(ctxFor(t, wait))
	require.NoError(t, err)
	assert.Equal(t, lock.Acquired, st)
}

func TestTwoPhaseWaitTimesOut(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	c := f.client(t, lock.Config{})
	key := uniqueKey(t, "k")
	holder := c.Lock(key)
	_, err := holder.Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	l := c.Lock(key)
	st, err := l.Enqueue(ctxFor(t, wait))
	require.NoError(t, err)
	require.Equal(t, lock.Queued, st)
	ok, err := l.Wait(ctxFor(t, wait), time.Second)
	require.NoError(t, err)
	assert.False(t, ok)
	// The place in the queue is gone: a release makes the key free.
	require.NoError(t, holder.Release(ctxFor(t, wait)))
	ok, err = c.Lock(key).TryAcquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.True(t, ok)
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
// after a wait keeps its connection to itself.
func TestCancelledAcquireKeepsOtherLocks(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	srv := f.server(t, 0)
	// Two exclusive connections: a keeps one, b's wait takes the other.
	c := f.client(t, lock.Config{Pool: pool.Config{MaxConns: 3, SharedConns: 1}})
	other := f.client(t, lock.Config{})
	a, b := uniqueKey(t, "a"), uniqueKey(t, "b")

	// a is taken by a blocking acquire, so it lives on the exclusive
	// connection.
	first := other.Lock(a)
	_, err := first.Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	la := c.Lock(a)
	got := make(chan bool, 1)
	go func() {
		ok, err := la.Acquire(ctxFor(t, wait))
		assert.NoError(t, err)
		got <- ok
	}()
	require.Eventually(t, func() bool { return srv.Busy() == 1 }, wait, time.Millisecond)
	require.NoError(t, first.Release(ctxFor(t, wait)))
	require.True(t, <-got)
	owner := srv.Stats().Locks[0].OwnerConnID

	hb := other.Lock(b)
	_, err = hb.Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Lock(b).Acquire(ctx)
		errc <- err
	}()
	require.Eventually(t, func() bool { return srv.Busy() == 1 }, wait, time.Millisecond)
	cancel()
	assert.ErrorIs(t, <-errc, context.Canceled)

	assert.NotEmpty(t, la.Token())
	for _, li := range srv.Stats().Locks {
		if li.Key == a {
			assert.Equal(t, owner, li.OwnerConnID, "a still held by the same connection")
		}
	}
	select {
	case <-la.Lost():
		t.Fatal("a was lost")
	default:
	}
	// The cancelled wait's connection was closed, so the server forgets
	// the wait (once it has noticed the close): b comes free.
	require.NoError(t, hb.Release(ctxFor(t, wait)))
	require.Eventually(t, func() bool {
		ok, err := other.Lock(b).TryAcquire(ctxFor(t, wait))
		return err == nil && ok
	}, wait, 10*time.Millisecond)
}

// Item 5 of issue 10: the acquire timeout bounds the wait for a free
// connection too, here while the only exclusive connection carries
// another caller's long wait.
func TestAcquireTimeoutBoundsTheWaitForAConnection(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
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
		ok, err := d.Lock(b, lock.AcquireTimeout(3*time.Second)).Acquire(ctxFor(t, wait))
		assert.NoError(t, err)
		assert.False(t, ok)
	}()
	require.Eventually(t, func() bool { return waiters(srv, b) == 1 }, wait, time.Millisecond)
	start := time.Now()
	ok, err := d.Lock(a, lock.AcquireTimeout(300*time.Millisecond)).Acquire(ctxFor(t, wait))
	took := time.Since(start)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Less(t, took, 800*time.Millisecond, "returned at its timeout, not after the other wait")
	<-waiting
}

// Hazard 7: timeouts go to the server in whole seconds, rounded up, and
// never wait past a sooner context deadline. A scripted server records
// the requests.
func TestTimeoutsAreWholeSecondsRoundedUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var mu sync.Mutex
	var args []string
	var served sync.WaitGroup
	served.Add(1)
	go func() {
		defer served.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			served.Add(1)
			go func() {
				defer served.Done()
				defer nc.Close()
				br := bufio.NewReader(nc)
				for {
					var lines [3]string
					for i := range lines {
						if lines[i], err = br.ReadString('\n'); err != nil {
							return
						}
					}
					arg := strings.TrimSpace(lines[2])
					mu.Lock()
					args = append(args, arg)
					mu.Unlock()
					if !strings.HasPrefix(arg, "0") {
						// Answer blocking requests after a while, as a
						// server whose lock stays taken.
						time.Sleep(time.Duration(arg[0]-'0') * time.Second)
					}
					if _, err := nc.Write([]byte("timeout\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	c, err := lock.New(lock.Config{Servers: []string{ln.Addr().String()}})
	require.NoError(t, err)
	ok, err := c.Lock("k", lock.AcquireTimeout(1500*time.Millisecond), lock.LeaseTTL(2500*time.Millisecond)).Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.False(t, ok)
	began := time.Now()
	_, err = c.Lock("k").Acquire(ctxFor(t, 300*time.Millisecond))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(began), 400*time.Millisecond, "the context deadline wins")
	ok, err = c.Lock("k", lock.AcquireTimeout(200*time.Millisecond)).Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	assert.False(t, ok)
	require.NoError(t, c.Close())
	ln.Close()
	served.Wait()
	// try-lock, then the blocking request; lease 2.5 s → 3; 1.5 s → 2;
	// 300 ms of context → 1; 200 ms → 1.
	assert.Equal(t, []string{"0 3", "2 3", "0", "1", "0", "1"}, args)
}
