package lock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testproxy"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// In a partition the server releases a silent connection's locks after
// its read timeout, whatever their lease. A holder with a long lease must
// give the lock up before that, so that the next holder (granted when the
// server times the connection out) never overlaps with it: the loss is
// declared before the grant in the logical order, and at least the
// client's margin (a tenth of the read timeout) earlier in virtual time.
func TestPartitionedHolderGivesUpBeforeTheServerReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const readTimeout = 2 * time.Second
		f := newVirtualFleet(t, 1, fakeserver.Config{ReadTimeout: readTimeout})
		srv := f.server(t, 0)
		proxy := testproxy.StartWith(t, f.addrs[0], testproxy.Config{Listen: f.mem.Net.Listen, Dial: f.mem.Net.Dial})
		a := f.client(t, lock.Config{Servers: []string{proxy.Addr()}, Pool: pool.Config{ServerReadTimeout: readTimeout}})
		b := f.client(t, lock.Config{Pool: pool.Config{ServerReadTimeout: readTimeout}})
		var seq, lostSeq atomic.Int64
		lock.SetLossHook(a, func(lock.LossReport) { lostSeq.Store(seq.Add(1)) })

		// A 30 s lease, renewed only after 27 s: only the read timeout can
		// end it within this test.
		la := a.Lock("k", lock.LeaseTTL(30*time.Second), lock.RenewRatio(0.9))
		mustAcquire(t, la)
		type grant struct {
			seq int64
			at  time.Time
		}
		granted := make(chan grant, 1)
		go func() {
			ok, err := b.Lock("k", lock.AcquireTimeout(10*time.Second)).Acquire(context.Background())
			assert.NoError(t, err)
			assert.True(t, ok)
			granted <- grant{seq.Add(1), time.Now()}
		}()
		synctest.Wait()
		require.Equal(t, 1, srv.Busy(), "b waits")

		time.Sleep(5 * time.Second) // keep-alives carry the connection
		require.False(t, gotLost(la.Lost()))
		partitioned := time.Now()
		proxy.Partition(true)
		<-la.Lost()
		lostAt := time.Now()
		assert.Equal(t, "", la.Token())
		g := <-granted
		// The server times the connection out a read timeout after the
		// last request it read there; the client, counting from the last
		// answer it read, gives up a tenth of it earlier. When a
		// keep-alive crossed the partition one way only (the server read
		// it, its answer was swallowed), the server's clock restarted
		// later than the client's, and the margin is that much wider.
		assert.LessOrEqual(t, g.at.Sub(partitioned), readTimeout)
		assert.Less(t, lostSeq.Load(), g.seq, "the holder gave up before the server granted the lock to another")
		assert.GreaterOrEqual(t, g.at.Sub(lostAt), readTimeout/10, "the holder's margin")
	})
}
