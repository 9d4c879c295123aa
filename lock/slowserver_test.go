package lock_test

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/dflock-go/dflock/internal/testproxy"
	"github.com/dflock-go/dflock/lock"
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
