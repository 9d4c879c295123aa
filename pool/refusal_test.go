package pool_test

import (
	"fmt"
	"net"
	"testing"
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
	srv := startServer(t, fakeserver.Config{MaxConnections: 1})
	holder, err := net.DialTimeout("tcp", srv.Addr(), wait)
	require.NoError(t, err)
	// The server counts the holder once it answers on it.
	holder.SetDeadline(time.Now().Add(wait))
	_, err = holder.Write([]byte("l\nheld-by-holder\n0\n"))
	require.NoError(t, err)
	_, err = holder.Read(make([]byte, 1))
	require.NoError(t, err)

	var logs testlog.Buffer
	p := newPool(t, srv.Addr(), pool.Config{Logger: logs.Logger()})
	_, err = p.Do(ctxFor(t, wait), tryLock("k"))
	require.ErrorIs(t, err, pool.ErrRefused)
	assert.ErrorContains(t, err, "--max-connections")

	for range 200 {
		_, err = p.Do(ctxFor(t, wait), tryLock("k"))
		require.ErrorIs(t, err, pool.ErrRefused, "each failure names the refusal")
	}
	assert.Less(t, p.Stats().Dials, uint64(10), "200 requests in a row do not dial 200 times")
	assert.Contains(t, logs.String(), "pool: cannot connect")

	// Once a connection is free, the pool connects again.
	holder.Close()
	deadline := time.Now().Add(wait)
	for {
		if _, err = p.Do(ctxFor(t, wait), tryLock("k")); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the backoff, with a deadline
	}
	require.NoError(t, err)
}

// TestReleaseRetriedWhenItsConnectionBreaks: the owning connection breaks
// with the release unanswered, on a server that keeps locks after a
// disconnect. The release goes out again on another connection, instead
// of leaving the lock held for its whole lease.
func TestReleaseRetriedWhenItsConnectionBreaks(t *testing.T) {
	srv := startServer(t, fakeserver.Config{DisableAutoRelease: true})
	p := newPool(t, srv.Addr(), pool.Config{})
	g := grant(t, p, "k")

	srv.Stall(wait)
	done := make(chan error, 1)
	go func() { done <- g.Release(ctxFor(t, wait)) }()
	require.Eventually(t, func() bool { return srv.Busy() == 1 }, wait, time.Millisecond, "the release reached the server")
	srv.DropConnections()
	srv.Unstall()

	select {
	case err := <-done:
		require.NoError(t, err, "the server still held the lock; the retry released it")
	case <-time.After(wait):
		t.Fatal("release did not return")
	}
	assert.False(t, srv.TokenState("k", g.Token()).Held)
	res, err := p.Do(ctxFor(t, wait), tryLock("k"))
	require.NoError(t, err)
	require.NoError(t, res.Resp.Err(), "the key is free at once, not after a lease")
	require.NoError(t, res.Grant.Release(ctxFor(t, wait)))
}

// A grant is renewed on its own connection, so a server that refuses
// every new connection cannot starve it of renewals while that
// connection works.
func TestRenewNeedsNoOtherConnection(t *testing.T) {
	srv := startServer(t, fakeserver.Config{MaxConnections: 2})
	p := newPool(t, srv.Addr(), pool.Config{MaxConns: 2, SharedConns: 1})
	pin, err := p.Pin(ctxFor(t, wait))
	require.NoError(t, err)
	res, err := pin.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: 1})
	require.NoError(t, err)
	require.NoError(t, res.Resp.Err())
	pin.Unpin()
	g := res.Grant

	other, err := net.DialTimeout("tcp", srv.Addr(), wait)
	require.NoError(t, err)
	defer other.Close()
	other.SetDeadline(time.Now().Add(wait))
	_, err = other.Write([]byte("l\nelsewhere\n0\n"))
	require.NoError(t, err)
	_, err = other.Read(make([]byte, 1))
	require.NoError(t, err, "the server's last connection is taken")

	errs := p.Renew(ctxFor(t, wait), []pool.Renewal{{Grant: g, Lease: 7}})
	require.NoError(t, errs[0])
	_, lease := g.Lease()
	assert.Equal(t, 7*time.Second, lease)
	assert.Zero(t, p.Stats().SharedConns, "no shared connection was needed")
}

// Grants lost with a broken connection are released on another one: a
// server with auto-release off would otherwise keep them for their
// lease, held by nobody.
func TestLocksOfABrokenConnectionAreReleasedElsewhere(t *testing.T) {
	srv := startServer(t, fakeserver.Config{DisableAutoRelease: true})
	p := newPool(t, srv.Addr(), pool.Config{})
	var gs []*pool.Grant
	for i := range 5 {
		gs = append(gs, grant(t, p, fmt.Sprintf("k%d", i)))
	}
	lost := make(chan struct{}, len(gs))
	for _, g := range gs {
		g.OnLost(func(error) { lost <- struct{}{} })
	}
	srv.DropConnections()
	for range gs {
		select {
		case <-lost:
		case <-time.After(wait):
			t.Fatal("a loss was not reported")
		}
	}
	require.Eventually(t, func() bool {
		for _, g := range gs {
			if srv.TokenState(g.Key(), g.Token()).Held {
				return false
			}
		}
		return true
	}, wait, time.Millisecond, "released on a new connection, not left to the lease")
}

// At its connection limit the server refuses a second shared connection;
// requests meant for that slot go on the one that works instead of
// failing.
func TestSharedConnectionsStandInForARefusedOne(t *testing.T) {
	srv := startServer(t, fakeserver.Config{MaxConnections: 1})
	p := newPool(t, srv.Addr(), pool.Config{SharedConns: 2, MaxConns: 3})
	for i := range 50 {
		res, err := p.Do(ctxFor(t, wait), tryLock(fmt.Sprintf("k%d", i)))
		require.NoError(t, err, "request %d", i)
		require.NoError(t, res.Resp.Err())
	}
	assert.Equal(t, 1, p.Stats().SharedConns)
}
