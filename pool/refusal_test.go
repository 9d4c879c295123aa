package pool_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testlog"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// TestRefusalOverMaxConnectionsIsNamedAndBacksOff: a server at its
// --max-connections closes every new connection before answering. That
// used to surface as EOF or "connection reset by peer", and every request
// dialled again at once.
func TestRefusalOverMaxConnectionsIsNamedAndBacksOff(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{MaxConnections: 1})
		holder := e.dial(srv.Addr())
		// The server counts the holder once it answers on it.
		_, err := holder.Write([]byte("l\nheld-by-holder\n0\n"))
		require.NoError(t, err)
		_, err = holder.Read(make([]byte, 1))
		require.NoError(t, err)

		var logs testlog.Buffer
		p := e.pool(srv.Addr(), pool.Config{Logger: logs.Logger()})
		_, err = p.Do(ctxFor(t, wait), tryLock("k"))
		require.ErrorIs(t, err, pool.ErrRefused)
		assert.ErrorContains(t, err, "--max-connections")

		for range 200 {
			_, err = p.Do(ctxFor(t, wait), tryLock("k"))
			require.ErrorIs(t, err, pool.ErrRefused, "each failure names the refusal")
		}
		assert.Less(t, p.Stats().Dials, uint64(10), "200 requests in a row do not dial 200 times")
		assert.Contains(t, logs.String(), "pool: cannot connect")

		// Once a connection is free, the pool connects again, when its
		// backoff has run.
		holder.Close()
		synctest.Wait()
		time.Sleep(2 * time.Second) // the longest backoff
		res, err := p.Do(ctxFor(t, wait), tryLock("k"))
		require.NoError(t, err)
		require.NoError(t, res.Resp.Err())
	})
}

// TestDialBackoffDoubles: against a server that refuses every connection,
// a request every millisecond dials at once, once more at once, then
// after 10 ms, and twice as long each time after, up to 2 s.
func TestDialBackoffDoubles(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		srv.RefuseConnections(true)
		p := e.pool(srv.Addr(), pool.Config{})
		start := time.Now()
		var dialled []time.Duration
		for time.Since(start) < 7*time.Second {
			before := p.Stats().Dials
			_, err := p.Do(ctxFor(t, wait), tryLock("k"))
			require.ErrorIs(t, err, pool.ErrRefused)
			for range p.Stats().Dials - before {
				dialled = append(dialled, time.Since(start))
			}
			time.Sleep(time.Millisecond)
		}
		ms := time.Millisecond
		assert.Equal(t, []time.Duration{0, 0, 10 * ms, 30 * ms, 70 * ms, 150 * ms, 310 * ms, 630 * ms, 1270 * ms, 2550 * ms, 4550 * ms, 6550 * ms}, dialled)

		// The first answer ends the backoff.
		srv.RefuseConnections(false)
		time.Sleep(2 * time.Second)
		_, err := p.Do(ctxFor(t, wait), tryLock("k"))
		require.NoError(t, err)
		dials := p.Stats().Dials
		srv.DropConnections()
		synctest.Wait()
		_, err = p.Do(ctxFor(t, wait), tryLock("k2"))
		require.NoError(t, err, "dialled again at once")
		assert.Greater(t, p.Stats().Dials, dials)
	})
}

// TestReleaseRetriedWhenItsConnectionBreaks: the owning connection breaks
// with the release unanswered, on a server that keeps locks after a
// disconnect. The release goes out again on another connection, instead
// of leaving the lock held for its whole lease.
func TestReleaseRetriedWhenItsConnectionBreaks(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{DisableAutoRelease: true})
		p := e.pool(srv.Addr(), pool.Config{})
		g := grant(t, p, "k")

		srv.Stall(wait)
		done := make(chan error, 1)
		go func() { done <- g.Release(ctxFor(t, wait)) }()
		synctest.Wait()
		require.Equal(t, 1, srv.Busy(), "the release reached the server")
		srv.DropConnections()
		srv.Unstall()

		require.NoError(t, <-done, "the server still held the lock; the retry released it")
		assert.False(t, srv.TokenState("k", g.Token()).Held)
		res, err := p.Do(ctxFor(t, wait), tryLock("k"))
		require.NoError(t, err)
		require.NoError(t, res.Resp.Err(), "the key is free at once, not after a lease")
		require.NoError(t, res.Grant.Release(ctxFor(t, wait)))
	})
}

// A grant is renewed on its own connection, so a server that refuses
// every new connection cannot starve it of renewals while that
// connection works.
func TestRenewNeedsNoOtherConnection(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{MaxConnections: 2})
		p := e.pool(srv.Addr(), pool.Config{MaxConns: 2, SharedConns: 1})
		pin, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		res, err := pin.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: 1})
		require.NoError(t, err)
		require.NoError(t, res.Resp.Err())
		pin.Unpin()
		g := res.Grant

		other := e.dial(srv.Addr())
		_, err = other.Write([]byte("l\nelsewhere\n0\n"))
		require.NoError(t, err)
		_, err = other.Read(make([]byte, 1))
		require.NoError(t, err, "the server's last connection is taken")

		errs := p.Renew(ctxFor(t, wait), []pool.Renewal{{Grant: g, Lease: 7}})
		require.NoError(t, errs[0])
		_, lease := g.Lease()
		assert.Equal(t, 7*time.Second, lease)
		assert.Zero(t, p.Stats().SharedConns, "no shared connection was needed")
	})
}

// Grants lost with a broken connection are released on another one: a
// server with auto-release off would otherwise keep them for their
// lease, held by nobody.
func TestLocksOfABrokenConnectionAreReleasedElsewhere(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{DisableAutoRelease: true})
		p := e.pool(srv.Addr(), pool.Config{})
		var gs []*pool.Grant
		for i := range 5 {
			gs = append(gs, grant(t, p, fmt.Sprintf("k%d", i)))
		}
		lost := make(chan struct{}, len(gs))
		for _, g := range gs {
			g.OnLost(func(error) { lost <- struct{}{} })
		}
		srv.DropConnections()
		synctest.Wait()
		require.Len(t, lost, len(gs), "every loss reported")
		for _, g := range gs {
			assert.False(t, srv.TokenState(g.Key(), g.Token()).Held, "released on a new connection, not left to the lease")
		}
	})
}

// At its connection limit the server refuses a second shared connection;
// requests meant for that slot go on the one that works instead of
// failing.
func TestSharedConnectionsStandInForARefusedOne(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{MaxConnections: 1})
		p := e.pool(srv.Addr(), pool.Config{SharedConns: 2, MaxConns: 3})
		for i := range 50 {
			res, err := p.Do(ctxFor(t, wait), tryLock(fmt.Sprintf("k%d", i)))
			require.NoError(t, err, "request %d", i)
			require.NoError(t, res.Resp.Err())
		}
		assert.Equal(t, 1, p.Stats().SharedConns)
	})
}
