package fakeserver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testcert"
)

func TestReadTimeoutClosesAndReleases(t *testing.T) {
	srv := start(t, fakeserver.Config{ReadTimeout: 300 * time.Millisecond})
	holder := dial(t, srv.Addr())
	waiter := dial(t, srv.Addr())
	assert.Regexp(t, "^ok ", holder.do("l", "k", "0"))
	// A blocking request is not subject to the read timeout: the waiter
	// sits in "l k 5" for longer than 300 ms without being closed.
	waiter.write("l\nk\n5\n")
	// The holder says nothing: after the timeout it gets "error", is
	// closed, and its lock goes to the waiter.
	line, err := holder.readLine(replyTimeout)
	require.NoError(t, err)
	assert.Equal(t, "error", line)
	holder.expectClosed()
	assert.Regexp(t, "^ok ", waiter.read())
	assert.Equal(t, uint64(1), srv.ReadTimeoutCloses(), "counted before the reply")
	// A client closing is no read timeout.
	waiter.nc.Close()
	require.Eventually(t, func() bool { return srv.Stats().Connections == 0 }, replyTimeout, time.Millisecond)
	assert.Equal(t, uint64(1), srv.ReadTimeoutCloses())
}

func TestReadTimeoutCountsPerLine(t *testing.T) {
	srv := start(t, fakeserver.Config{ReadTimeout: 300 * time.Millisecond})
	c := dial(t, srv.Addr())
	c.write("l\nk\n")
	line, err := c.readLine(replyTimeout)
	require.NoError(t, err)
	assert.Equal(t, "error", line, "a half-sent request times out too")
	c.expectClosed()
	assert.Equal(t, uint64(1), srv.ReadTimeoutCloses())

	// So does a first request that never comes on a server with a token.
	srv = start(t, fakeserver.Config{ReadTimeout: 300 * time.Millisecond, AuthToken: "s3cret"})
	c = dial(t, srv.Addr())
	line, err = c.readLine(replyTimeout)
	require.NoError(t, err)
	assert.Equal(t, "error_auth", line)
	assert.Equal(t, uint64(1), srv.ReadTimeoutCloses())
}

func TestMaxConnections(t *testing.T) {
	srv := start(t, fakeserver.Config{MaxConnections: 1})
	first := dial(t, srv.Addr())
	assert.Regexp(t, "^ok ", first.do("l", "k", "0"))
	second := dial(t, srv.Addr())
	second.write("l\nk2\n0\n")
	second.expectClosed()
	// Once the first leaves, a connection is accepted again.
	first.nc.Close()
	require.Eventually(t, func() bool { return srv.Stats().Connections == 0 }, replyTimeout, time.Millisecond)
	third := dial(t, srv.Addr())
	assert.Regexp(t, "^ok ", third.do("l", "k", "0"))
}

func TestIdleKeysAreCollected(t *testing.T) {
	srv := start(t, fakeserver.Config{MaxLocks: 1, GCInterval: 20 * time.Millisecond, GCMaxIdle: 100 * time.Millisecond})
	c := dial(t, srv.Addr())
	tok := strings.Fields(c.do("sl", "a", "0 2"))[1]
	assert.Equal(t, "ok", c.do("sr", "a", tok))
	assert.Equal(t, "error_max_locks", c.do("l", "b", "0"))
	require.Len(t, srv.Stats().IdleSemaphores, 1)
	require.Eventually(t, func() bool { return len(srv.Stats().IdleSemaphores) == 0 }, replyTimeout, 5*time.Millisecond)
	tok = strings.Fields(c.do("l", "b", "0"))[1]
	assert.Equal(t, "ok", c.do("r", "b", tok))
	require.Eventually(t, func() bool { return len(srv.Stats().IdleLocks) == 0 }, replyTimeout, 5*time.Millisecond)
	// Collected, "a" forgot its limit.
	assert.Regexp(t, "^ok ", c.do("sl", "a", "0 3"))
}

func TestDisableAutoRelease(t *testing.T) {
	srv := start(t, fakeserver.Config{DisableAutoRelease: true})
	holder := dial(t, srv.Addr())
	tok := strings.Fields(holder.do("l", "k", "0 30"))[1]
	holder.do("e", "q", "")
	holder.nc.Close()
	require.Eventually(t, func() bool { return srv.Stats().Connections == 0 }, replyTimeout, time.Millisecond)
	other := dial(t, srv.Addr())
	assert.Equal(t, "timeout", other.do("l", "k", "0"), "the lock outlives its connection")
	assert.Equal(t, "ok 33", other.do("n", "k", tok), "and can be renewed by token")
	other.write("l\nk\n5\n")
	srv.ExpireNow("k")
	assert.Regexp(t, "^ok ", other.read())
}

func TestTLS(t *testing.T) {
	serverTLS, clientTLS := testcert.New(t)
	srv := start(t, fakeserver.Config{TLS: serverTLS})
	nc, err := tls.Dial("tcp", srv.Addr(), clientTLS)
	require.NoError(t, err)
	defer nc.Close()
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	tok := strings.Fields(c.do("l", "k", "0"))[1]
	// A wait on TLS that ends in a grant leaves the stream usable.
	other := dial(t, srv.Addr()) // plain TCP to a TLS server: never answered
	other.nc.Close()
	c2nc, err := tls.Dial("tcp", srv.Addr(), clientTLS)
	require.NoError(t, err)
	defer c2nc.Close()
	c2 := &client{t: t, nc: c2nc, br: bufio.NewReader(c2nc)}
	c2.write("l\nk\n5\n")
	c2.expectSilent()
	assert.Equal(t, "ok", c.do("r", "k", tok))
	assert.Regexp(t, "^ok [0-9a-f]{32} 33$", c2.read())
	assert.Equal(t, "timeout", c2.do("l", "k", "0"), "same TLS connection, next request")
	c2nc.Close()
	assert.Regexp(t, "^ok [0-9a-f]{32} 33$", c.do("l", "k", "5"), "released with c2")
	// A blocked request on TLS still notices the client leaving.
	c.write("l\nk\n30\n")
	c.expectSilent()
	nc.Close()
	require.Eventually(t, func() bool { return srv.Stats().Connections == 0 }, replyTimeout, time.Millisecond)
	assert.Empty(t, srv.Stats().Locks)

	// An untrusting client fails the handshake.
	_, err = tls.Dial("tcp", srv.Addr(), &tls.Config{ServerName: "127.0.0.1"})
	require.Error(t, err)
}

func TestConfig(t *testing.T) {
	def := fakeserver.DefaultConfig()
	assert.Equal(t, "127.0.0.1", def.Host)
	assert.Equal(t, 6388, def.Port)
	assert.Equal(t, 33*time.Second, def.DefaultLeaseTTL)
	assert.Equal(t, time.Second, def.LeaseSweepInterval)
	assert.Equal(t, 5*time.Second, def.GCInterval)
	assert.Equal(t, 60*time.Second, def.GCMaxIdle)
	assert.Equal(t, 1024, def.MaxLocks)
	assert.Equal(t, 0, def.MaxConnections)
	assert.Equal(t, 0, def.MaxWaiters)
	assert.Equal(t, 23*time.Second, def.ReadTimeout)
	assert.Equal(t, 5*time.Second, def.WriteTimeout)
	assert.Equal(t, 30*time.Second, def.ShutdownTimeout)
	assert.False(t, def.DisableAutoRelease)

	for name, cfg := range map[string]fakeserver.Config{
		"sub-second lease":  {DefaultLeaseTTL: 500 * time.Millisecond},
		"fractional lease":  {DefaultLeaseTTL: 1500 * time.Millisecond},
		"negative interval": {LeaseSweepInterval: -time.Second},
		"bad port":          {Port: 70000},
		"negative waiters":  {MaxWaiters: -1},
	} {
		_, err := fakeserver.Start(cfg)
		assert.Error(t, err, name)
	}

	srv := start(t, fakeserver.Config{DefaultLeaseTTL: 4 * time.Second})
	assert.Regexp(t, "^ok [0-9a-f]{32} 4$", dial(t, srv.Addr()).do("l", "k", "0"))
}

func TestShutdownFinishesRequestsThenCloses(t *testing.T) {
	srv, err := fakeserver.Start(fakeserver.Config{})
	require.NoError(t, err)
	idle := dial(t, srv.Addr())
	assert.Regexp(t, "^ok ", idle.do("l", "k", "0"))
	blocked := dial(t, srv.Addr())
	blocked.write("l\nk\n30\n")
	blocked.expectSilent()

	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	require.NoError(t, srv.Shutdown(ctx))
	idle.expectClosed()
	blocked.expectClosed()
	_, err = net.DialTimeout("tcp", srv.Addr(), time.Second)
	assert.Error(t, err, "no longer listening")
	assert.NoError(t, srv.Close(), "Close after Shutdown is harmless")
}

func TestShutdownTimeoutForcesClose(t *testing.T) {
	srv, err := fakeserver.Start(fakeserver.Config{ShutdownTimeout: 50 * time.Millisecond})
	require.NoError(t, err)
	c := dial(t, srv.Addr())
	srv.Stall(time.Minute) // the request below never finishes on its own
	c.write("l\nk\n0\n")
	require.Eventually(t, func() bool { return srv.Busy() == 1 }, replyTimeout, time.Millisecond)
	assert.ErrorIs(t, srv.Shutdown(context.Background()), context.DeadlineExceeded)
	c.expectClosed()
}

func TestFleet(t *testing.T) {
	f, err := fakeserver.StartFleet(3, fakeserver.Config{})
	require.NoError(t, err)
	defer f.Close()
	addrs := f.Addrs()
	require.Len(t, addrs, 3)
	assert.NotEqual(t, addrs[0], addrs[1])
	for _, a := range addrs {
		assert.Regexp(t, "^ok ", dial(t, a).do("l", "same-key", "0"), "each server has its own state")
	}
	_, err = fakeserver.StartFleet(0, fakeserver.Config{})
	assert.Error(t, err)
}
