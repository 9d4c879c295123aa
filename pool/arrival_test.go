package pool_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/memnet"
	"github.com/dflock-go/dflock/internal/starve"
	"github.com/dflock-go/dflock/pool"
)

// A deadline that passes while the answer is in our own process (the
// reply received and not read, the request not yet written: the process
// was starved) is not the server's silence: the call waits for it, up to
// half a second more. A stalled server sends nothing, and its call still
// fails at its deadline (TestDoByGivesUpAtItsDeadline).
func TestAStarvedClientDoesNotBlameItsServer(t *testing.T) {
	for _, side := range []string{"reader", "writer"} {
		t.Run(side, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := &env{t: t, nw: memnet.New()}
				srv := e.server(fakeserver.Config{})
				var mu sync.Mutex
				var conns []*starve.Conn
				// One shared connection: the requests below all go on it.
				p := newPool(t, srv.Addr(), pool.Config{SharedConns: 1, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := e.nw.Dial(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					sc := starve.New(c)
					mu.Lock()
					conns = append(conns, sc)
					mu.Unlock()
					return sc, nil
				}})
				grant(t, p, "warm") // connected
				// Every connection: the request may go on any of them.
				hold := func(d time.Duration) {
					mu.Lock()
					defer mu.Unlock()
					for _, sc := range conns {
						if side == "writer" {
							sc.HoldWrites(d)
						} else {
							sc.HoldReads(d)
						}
					}
				}

				// Held 300 ms past a 100 ms deadline: answered.
				start := time.Now()
				hold(300 * time.Millisecond)
				res, err := p.DoBy(ctxFor(t, wait), tryLock("k"), start.Add(100*time.Millisecond))
				require.NoError(t, err)
				require.NotNil(t, res.Grant, "the lock is ours, not given up")
				assert.Equal(t, 300*time.Millisecond, time.Since(start), "as soon as the hold ended")
				assert.NotZero(t, p.Stats().StarvedWaits)

				// Held for good (2 s): the call gives up half a second
				// past its deadline, and its late grant goes back.
				start = time.Now()
				hold(2 * time.Second)
				_, err = p.DoBy(ctxFor(t, wait), tryLock("k2"), start.Add(100*time.Millisecond))
				assert.ErrorIs(t, err, pool.ErrNoReply)
				assert.InDelta(t, 600*time.Millisecond, time.Since(start), float64(10*time.Millisecond))
				time.Sleep(2 * time.Second)
				synctest.Wait()
				assert.Zero(t, heldBy(srv, "k2"), "the late grant went back")
			})
		})
	}
}
