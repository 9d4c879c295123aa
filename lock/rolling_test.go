package lock_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
)

// A rolling restart loses nothing: R=3 over 3 and 5 servers, each server
// in turn killed (or drained as on SIGTERM: it stops accepting, serves its
// open connections for 1 s, then closes them), down 1 s, back empty, then
// 1 s before the next. When a
// server answers again every lock takes its replica there back at once,
// in one write, not on its own backoff: all are back on 3 replicas within
// 300 ms of the return, so the next server down leaves each a quorum.
func TestRollingRestartLosesNothing(t *testing.T) {
	locks := 2000
	if testing.Short() {
		locks = 500
	}
	if n, err := strconv.Atoi(os.Getenv("DFLOCK_ROLLING_LOCKS")); err == nil {
		locks = n // the 20,000, measured by hand: too slow for CI under -race
	}
	for _, tc := range []struct {
		n    int
		stop string
	}{{3, "kill"}, {5, "kill"}, {3, "drain"}, {5, "drain"}} {
		n := tc.n
		t.Run(fmt.Sprintf("%d servers %s", n, tc.stop), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newVirtualFleet(t, n, fakeserver.Config{LeaseSweepInterval: 50 * time.Millisecond, MaxLocks: -1})
				c := f.client(t, lock.Config{Replicas: 3})
				var lost atomic.Int64
				held := make([]*lock.Lock, locks)
				for i := range held {
					held[i] = c.Lock(fmt.Sprintf("roll-%d", i), lock.LeaseTTL(5*time.Second),
						lock.OnLost(func(string, error) { lost.Add(1) }))
					mustAcquire(t, held[i])
				}
				synctest.Wait()
				full := func() int {
					n := 0
					for _, l := range held {
						if len(l.HeldOn()) == 3 {
							n++
						}
					}
					return n
				}
				require.Equal(t, locks, full())
				for i := range n {
					srv := f.server(t, i)
					if tc.stop == "kill" {
						require.NoError(t, srv.Stop())
					} else {
						ctx, cancel := context.WithTimeout(context.Background(), time.Second)
						assert.ErrorIs(t, srv.Shutdown(ctx), context.DeadlineExceeded, "our connections stay open")
						cancel()
					}
					time.Sleep(time.Second)
					require.NoError(t, srv.Restart())
					back := time.Now()
					for full() < locks && time.Since(back) < 2*time.Second {
						time.Sleep(10 * time.Millisecond) // virtual: a poll of the state
					}
					assert.LessOrEqual(t, time.Since(back), 300*time.Millisecond, "all back on 3 replicas after server %d returned", i)
					t.Logf("server %d: all %d locks back on 3 replicas %v after its return", i, locks, time.Since(back))
					time.Sleep(time.Second - time.Since(back))
				}
				synctest.Wait()
				assert.Zero(t, lost.Load(), "locks lost")
				for _, l := range held {
					require.NoError(t, l.Release(context.Background()))
				}
			})
		})
	}
}
