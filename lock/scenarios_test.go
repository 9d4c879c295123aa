package lock_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testcert"
	"github.com/dflock-go/dflock/internal/testlog"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// The server dies while 1,000 locks of a 30 s lease are held: every Lock
// reports the loss at the instant the server went, and none still claims
// to hold.
func TestServerKilledWhileHolding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{MaxLocks: -1})
		srv := f.server(t, 0)
		c := f.client(t, lock.Config{})
		locks := make([]*lock.Lock, 1000)
		for i := range locks {
			locks[i] = c.Lock(fmt.Sprintf("killed-%d", i), lock.LeaseTTL(30*time.Second))
			mustAcquire(t, locks[i])
		}
		time.Sleep(10 * time.Second)
		killed := time.Now()
		require.NoError(t, srv.Stop())
		for _, l := range locks {
			<-l.Lost()
			assert.Equal(t, "", l.Token())
		}
		assert.Zero(t, time.Since(killed), "reported lost at once")
	})
}

// After a restart on the same address the client recovers: the locks
// the dead server held are reported lost, each key can be taken again
// once the pool's dial backoff (2 s at most) lets it reach the server,
// and closing the client leaves no goroutine of it behind.
func TestServerRestartRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		before, leaks := goroutineIDs(), goleak.IgnoreCurrent()
		c, err := lock.New(lock.Config{Servers: f.addrs, Pool: f.mem.Pool(pool.Config{})})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		locks := make([]*lock.Lock, 20)
		for i := range locks {
			locks[i] = c.Lock(fmt.Sprintf("restart-%d", i))
			mustAcquire(t, locks[i])
		}
		require.NoError(t, srv.Stop())
		// The client sees the close, and its dials are refused meanwhile.
		synctest.Wait()
		for _, l := range locks {
			assert.True(t, gotLost(l.Lost()), "%s lost with the server", l.Key())
		}
		require.NoError(t, srv.Restart())
		time.Sleep(2 * time.Second) // the longest dial backoff
		// New acquires succeed, including keys the dead server had
		// granted, with no wait.
		began := time.Now()
		for i := range locks {
			ok, err := c.Lock(fmt.Sprintf("restart-%d", i)).Acquire(ctxFor(t, wait))
			require.NoError(t, err)
			require.True(t, ok)
		}
		assert.Zero(t, time.Since(began))
		closeNow(t, c, 0, before, leaks)
	})
}

// Closing a client on real TCP leaves no goroutine and no file
// descriptor behind, once the servers are closed too (their ends of the
// connections are file descriptors of this process).
func TestCloseLeavesNoFileDescriptors(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	fleet, err := fakeserver.StartFleet(2, fakeserver.Config{})
	require.NoError(t, err)
	// Counted with the network in use: the first socket also opens the
	// runtime's poller.
	fds := openFDs(t)
	c, err := lock.New(lock.Config{Servers: fleet.Addrs()})
	require.NoError(t, err)
	for i := range 20 {
		mustAcquire(t, c.Lock(fmt.Sprintf("fd-%d", i)))
	}
	require.NoError(t, c.Close())
	require.NoError(t, fleet.Close())
	assert.LessOrEqual(t, openFDs(t), fds)
	goleak.VerifyNone(t, leaks)
}

// A connection dropped in the middle of an acquire: the caller gets an
// error and nothing stays held on the server.
func TestConnectionDroppedMidAcquire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		holder := f.client(t, lock.Config{})
		c := f.client(t, lock.Config{})
		mustAcquire(t, holder.Lock("k"))
		errc := make(chan error, 1)
		go func() {
			ok, err := c.Lock("k").Acquire(context.Background())
			if err == nil && ok {
				err = errors.New("acquired")
			}
			errc <- err
		}()
		// Queued, not merely busy: a drop during the try-lock before the
		// wait would let the acquire succeed afresh.
		synctest.Wait()
		require.Equal(t, 1, waiters(srv, "k"))
		srv.DropConnections()
		err := <-errc
		require.Error(t, err)
		assert.NotErrorIs(t, err, lock.ErrTimeout)
		synctest.Wait()
		assert.Empty(t, srv.Stats().Locks, "nothing left held")
	})
}

// Against a stalled server every call returns at its context deadline,
// exactly.
func TestStalledServerHonoursDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		srv := f.server(t, 0)
		c := f.client(t, lock.Config{})
		held := c.Lock("held")
		mustAcquire(t, held)
		srv.Stall(time.Hour)
		defer srv.Unstall()
		const deadline = 200 * time.Millisecond
		calls := map[string]func(ctx context.Context) error{
			"acquire":     func(ctx context.Context) error { _, err := c.Lock("a").Acquire(ctx); return err },
			"try-acquire": func(ctx context.Context) error { _, err := c.Lock("b").TryAcquire(ctx); return err },
			"enqueue":     func(ctx context.Context) error { _, err := c.Lock("c").Enqueue(ctx); return err },
			"release":     func(ctx context.Context) error { return held.Release(ctx) },
			"semaphore":   func(ctx context.Context) error { _, err := c.Semaphore("s", 2).Acquire(ctx); return err },
			"with-lock": func(ctx context.Context) error {
				return c.WithLock(ctx, "d", func(context.Context) error { return nil })
			},
			"stats": func(ctx context.Context) error {
				return c.Stats(ctx)[0].Err
			},
		}
		var wg sync.WaitGroup
		for name, call := range calls {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				defer cancel()
				began := time.Now()
				err := call(ctx)
				assert.ErrorIs(t, err, context.DeadlineExceeded, name)
				assert.Equal(t, deadline, time.Since(began), name)
			})
		}
		wg.Wait()
	})
}

// A fakeserver fed random bytes by many connections stays up and keeps
// serving well-formed clients.
func TestServerSurvivesGarbage(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	f.server(t, 0)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			nc, err := net.Dial("tcp", f.addrs[0])
			if err != nil {
				return
			}
			defer nc.Close()
			buf := make([]byte, 512)
			for range 50 {
				for j := range buf {
					buf[j] = byte(rng.UintN(256))
					if rng.IntN(20) == 0 {
						buf[j] = '\n'
					}
				}
				if _, err := nc.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	c := f.client(t, lock.Config{})
	for i := range 50 {
		l := c.Lock(fmt.Sprintf("k%d", i))
		mustAcquire(t, l)
		require.NoError(t, l.Release(ctxFor(t, wait)))
	}
	wg.Wait()
	mustAcquire(t, c.Lock("after"))
}

// TLS and auth end to end: a wrong token and an untrusted certificate are
// errors, and no token or secret ever reaches the logs.
func TestTLSAndAuthEndToEnd(t *testing.T) {
	serverTLS, clientTLS := testcert.New(t)
	const secret = "s3cret-token-value"
	f := newFleet(t, 1, fakeserver.Config{TLS: serverTLS, AuthToken: secret})
	f.server(t, 0)
	var logs testlog.Buffer
	c := f.client(t, lock.Config{Pool: pool.Config{TLS: clientTLS, AuthToken: secret}, Logger: logs.Logger()})
	l := c.Lock("k", lock.LeaseTTL(time.Second))
	mustAcquire(t, l)
	tok := l.Token()
	require.NoError(t, l.Release(ctxFor(t, wait)))

	wrong := f.client(t, lock.Config{Pool: pool.Config{TLS: clientTLS, AuthToken: "wrong-token-value"}, Logger: logs.Logger()})
	_, err := wrong.Lock("k").Acquire(ctxFor(t, wait))
	assert.ErrorIs(t, err, lock.ErrAuth)
	assert.ErrorContains(t, err, "the server requires an auth token, and none was sent or it did not match")
	assert.ErrorContains(t, err, "give the token in Config.Pool.AuthToken")
	assert.NotContains(t, err.Error(), "wrong-token-value")

	untrusting := f.client(t, lock.Config{Pool: pool.Config{TLS: &tls.Config{}, AuthToken: secret}, Logger: logs.Logger()})
	_, err = untrusting.Lock("k").Acquire(ctxFor(t, wait))
	assert.ErrorContains(t, err, "certificate")

	// A lost lock is logged: with the key, never the token.
	l2 := c.Lock("k2", lock.LeaseTTL(time.Second))
	mustAcquire(t, l2)
	tok2 := l2.Token()
	f.fake.Servers[0].DropConnections()
	select {
	case <-l2.Lost():
	case <-time.After(wait):
		t.Fatal("not lost")
	}
	// Lost closes first; the log line follows.
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "lock lost") }, wait, time.Millisecond)
	out := logs.String()
	assert.Contains(t, out, "lock lost")
	for _, s := range []string{secret, "wrong-token-value", tok, tok2} {
		assert.NotContains(t, out, s)
	}
	assert.True(t, strings.Contains(out, "k2"))
}
