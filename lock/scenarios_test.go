package lock_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testcert"
	"github.com/dflock-go/dflock/internal/testlog"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// The server dies while 1,000 locks are held: every Lock reports the loss
// within one renew interval, and none still claims to hold.
func TestServerKilledWhileHolding(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{MaxLocks: -1})
	srv := f.server(t, 0)
	c := f.client(t, lock.Config{})
	const n, lease = 1000, 2 * time.Second
	locks := make([]*lock.Lock, n)
	for i := range locks {
		locks[i] = c.Lock(fmt.Sprintf("killed-%d", i), lock.LeaseTTL(lease))
		mustAcquire(t, locks[i])
	}
	killed := time.Now()
	require.NoError(t, srv.Stop())
	renewInterval := lease / 2
	for _, l := range locks {
		select {
		case <-l.Lost():
		case <-time.After(renewInterval - time.Since(killed)):
			t.Fatalf("%s not reported lost within one renew interval", l.Key())
		}
		assert.Equal(t, "", l.Token())
	}
	t.Logf("1,000 locks reported lost %v after the server died", time.Since(killed))
}

// After a restart on the same address the client recovers, and closing
// it leaves no goroutine or file descriptor behind.
func TestServerRestartRecovers(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	srv := f.server(t, 0)
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	c, err := lock.New(lock.Config{Servers: f.addrs})
	require.NoError(t, err)
	for i := range 20 {
		mustAcquire(t, c.Lock(fmt.Sprintf("restart-%d", i)))
	}
	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Restart())
	// New acquires succeed, including keys the dead server had granted.
	require.Eventually(t, func() bool {
		ok, err := c.Lock("restart-0").TryAcquire(context.Background())
		return err == nil && ok
	}, wait, 10*time.Millisecond)
	for i := 1; i < 20; i++ {
		mustAcquire(t, c.Lock(fmt.Sprintf("restart-%d", i)))
	}
	require.NoError(t, c.Close())
	// The server side closes too; let its goroutines go.
	require.Eventually(t, func() bool { return srv.Stats().Connections == 0 }, wait, time.Millisecond)
	noLeaks(t, goroutines, fds)
}

// noLeaks polls, in the test's own goroutine (require.Eventually would
// add goroutines of its own), until goroutines and file descriptors are
// back to what they were, or fails after a deadline.
func noLeaks(t *testing.T, goroutines, fds int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > goroutines || openFDs(t) > fds {
		if time.Now().After(deadline) {
			t.Fatalf("leak: goroutines %d→%d, fds %d→%d", goroutines, runtime.NumGoroutine(), fds, openFDs(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A connection dropped in the middle of an acquire: the caller gets an
// error and nothing stays held on the server.
func TestConnectionDroppedMidAcquire(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
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
	// Queued, not merely busy: Busy is 1 during the try-lock before the
	// wait too, and a drop then would let the acquire succeed afresh.
	require.Eventually(t, func() bool { return waiters(srv, "k") == 1 }, wait, time.Millisecond)
	srv.DropConnections()
	err := <-errc
	require.Error(t, err)
	assert.NotErrorIs(t, err, lock.ErrTimeout)
	// As in dflockd, the wait of a closed connection may still be granted
	// the lock before the server sees the close and releases it.
	assert.Eventually(t, func() bool { return len(srv.Stats().Locks) == 0 }, wait, time.Millisecond, "nothing left held")
}

// Against a stalled server every call returns at its context deadline.
func TestStalledServerHonoursDeadlines(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	srv := f.server(t, 0)
	c := f.client(t, lock.Config{})
	held := c.Lock("held")
	mustAcquire(t, held)
	srv.Stall(time.Minute)
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			began := time.Now()
			err := call(ctx)
			assert.ErrorIs(t, err, context.DeadlineExceeded, name)
			assert.Less(t, time.Since(began), deadline+100*time.Millisecond, name)
		}()
	}
	wg.Wait()
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
	<-l2.Lost()
	// Lost closes first; the log line follows.
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "lock lost") }, wait, time.Millisecond)
	out := logs.String()
	assert.Contains(t, out, "lock lost")
	for _, s := range []string{secret, "wrong-token-value", tok, tok2} {
		assert.NotContains(t, out, s)
	}
	assert.True(t, strings.Contains(out, "k2"))
}
