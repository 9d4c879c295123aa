package lock_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/internal/starve"
	"github.com/dflock-go/dflock/internal/testproxy"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// A server that did not answer a try-lock within the replica timeout
// gets one request at a time until it answers (doc.go). The acquire that
// gave up on it returns holding 2 of 3 replicas, and its holder's first
// re-take of the third goes out at once, as the server's probe. A
// release cancels the re-take, but the probe lasts until its request is
// answered or its deadline passes: the next acquire sends none of its
// own to that server.
func TestSlowServerGetsOneRequestAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, addrs := replicated(t, 5, 3, "k")
		proxy := testproxy.StartWith(t, addrs[0], testproxy.Config{Listen: f.mem.Net.Listen, Dial: f.mem.Net.Dial})
		servers := slices.Clone(f.addrs)
		servers[slices.Index(servers, addrs[0])] = proxy.Addr()
		c := f.client(t, lock.Config{Servers: servers, Replicas: 3, ReplicaTimeout: time.Second})
		mustAcquire(t, c.Lock("warm-up"))
		synctest.Wait()
		srvs[0].Stall(time.Hour)
		t.Cleanup(srvs[0].Unstall)
		before := proxy.Requests()

		l := c.Lock("k")
		mustAcquire(t, l) // gives up on the stalled server after 1 s; its re-take probes it
		time.Sleep(time.Millisecond)
		assert.NoError(t, l.Release(ctxFor(t, wait)))
		mustAcquire(t, l)
		assert.NoError(t, l.Release(ctxFor(t, wait)))
		synctest.Wait()
		assert.Equal(t, int64(2), proxy.Requests()-before, "the first try-lock and one probe, both unanswered")
	})
}

// A replica whose answer reaches this process in time but waits unread,
// because the process is short of CPU, is not a slow server: at the
// replica timeout the acquire finds the answer on its way, takes it when
// the reader runs, holds all three replicas, and marks no server slow.
// A stalled server is still marked.
func TestAStarvedClientDoesNotMarkHealthyServersSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, addrs := replicated(t, 3, 3, "k")
		var mu sync.Mutex
		conns := map[string][]*starve.Conn{}
		cfg := f.mem.Pool(pool.Config{})
		dial := cfg.Dial
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			sc := starve.New(nc)
			mu.Lock()
			conns[addr] = append(conns[addr], sc)
			mu.Unlock()
			return sc, nil
		}
		c, err := lock.New(lock.Config{Servers: f.addrs, Replicas: 3, Pool: cfg})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		mustAcquire(t, c.Lock("warm-up"))
		synctest.Wait()

		// Two of three held past the replica timeout: no quorum without
		// them.
		mu.Lock()
		for _, a := range addrs[1:] {
			for _, sc := range conns[a] {
				sc.HoldReads(700 * time.Millisecond)
			}
		}
		mu.Unlock()
		start := time.Now()
		l := c.Lock("k")
		mustAcquire(t, l)
		assert.Equal(t, 700*time.Millisecond, time.Since(start), "when the reader ran")
		assert.Len(t, l.HeldOn(), 3)
		assert.Empty(t, c.SlowMarks(), "no server was slow")
		require.NoError(t, l.Release(ctxFor(t, wait)))

		srvs[0].Stall(time.Hour)
		t.Cleanup(srvs[0].Unstall)
		mustAcquire(t, c.Lock("k2")) // on two; the third is awaited in the background
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, map[string]uint64{addrs[0]: 1}, c.SlowMarks(), "a stalled server is")
	})
}

// When every replica of a key is marked slow, an acquire asks them all
// the same rather than fail at once: concurrent acquires right after a
// stall of the whole fleet (or of this process) all succeed, where each
// server's one probe at a time left the others failing with "only 0 of 3
// replicas available".
func TestAllSlowReplicasAreAskedAnyway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, srvs, _ := replicated(t, 3, 3, "k")
		c := f.client(t, lock.Config{Servers: f.addrs, Replicas: 3})
		mustAcquire(t, c.Lock("warm-up"))
		for _, s := range srvs {
			s.Stall(time.Hour)
		}
		ok, err := c.Lock("k", lock.AcquireTimeout(time.Second)).Acquire(ctxFor(t, wait))
		assert.False(t, ok)
		assert.Error(t, err, "no server answers")
		for _, s := range srvs {
			s.Unstall()
		}
		synctest.Wait()
		require.Len(t, c.SlowMarks(), 3, "all three marked slow")

		var wg sync.WaitGroup
		errs := make([]error, 10)
		for i := range errs {
			wg.Go(func() {
				l := c.Lock(fmt.Sprintf("k%d", i))
				ok, err := l.Acquire(ctxFor(t, wait))
				if err == nil && !ok {
					err = fmt.Errorf("not acquired")
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			assert.NoError(t, err, "acquire %d", i)
		}
	})
}
