package fakeserver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testcert"
)

func TestReadTimeoutClosesAndReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{ReadTimeout: 300 * time.Millisecond})
		holder := dial(t, srv)
		waiter := dial(t, srv)
		assert.Regexp(t, "^ok ", holder.do("l", "k", "0"))
		began := time.Now()
		// A blocking request is not subject to the read timeout: the waiter
		// sits in "l k 5" for longer than 300 ms without being closed.
		waiter.write("l\nk\n5\n")
		// The holder says nothing: 300 ms after its reply it gets "error",
		// is closed, and its lock goes to the waiter.
		line, err := holder.readLine(replyTimeout)
		require.NoError(t, err)
		assert.Equal(t, "error", line)
		assert.Equal(t, 300*time.Millisecond, time.Since(began))
		holder.expectClosed()
		assert.Regexp(t, "^ok ", waiter.read())
		assert.Equal(t, 300*time.Millisecond, time.Since(began), "handed over at once")
		assert.Equal(t, uint64(1), srv.ReadTimeoutCloses(), "counted before the reply")
		// A client closing is no read timeout.
		waiter.nc.Close()
		srv.settle()
		assert.Zero(t, srv.Stats().Connections)
		assert.Equal(t, uint64(1), srv.ReadTimeoutCloses())
	})
}

func TestReadTimeoutCountsPerLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{ReadTimeout: 300 * time.Millisecond})
		c := dial(t, srv)
		time.Sleep(200 * time.Millisecond)
		began := time.Now()
		c.write("l\nk\n")
		line, err := c.readLine(replyTimeout)
		require.NoError(t, err)
		assert.Equal(t, "error", line, "a half-sent request times out too")
		assert.Equal(t, 300*time.Millisecond, time.Since(began), "counted from the last line, not the first")
		c.expectClosed()
		assert.Equal(t, uint64(1), srv.ReadTimeoutCloses())

		// So does a first request that never comes on a server with a token.
		srv = start(t, fakeserver.Config{ReadTimeout: 300 * time.Millisecond, AuthToken: "s3cret"})
		began = time.Now()
		c = dial(t, srv)
		line, err = c.readLine(replyTimeout)
		require.NoError(t, err)
		assert.Equal(t, "error_auth", line)
		assert.Equal(t, 300*time.Millisecond, time.Since(began))
		c.expectClosed()
		assert.Equal(t, 400*time.Millisecond, time.Since(began), "closed after the pause that slows guessing")
		assert.Equal(t, uint64(1), srv.ReadTimeoutCloses())
	})
}

// TestLineTooLong checks that a line over 256 bytes is answered "error"
// only once it ends (its '\n', or the read timeout), and that what the
// client sent after it is read and dropped, so the close is a FIN, not an
// RST: only TCP shows that.
func TestLineTooLong(t *testing.T) {
	srv := startTCP(t, fakeserver.Config{})
	c := dial(t, srv)
	c.write(strings.Repeat("x", 300))
	c.expectSilent()
	c.write("yyy\nl\nk\n0\n")
	assert.Equal(t, "error", c.read())
	line, err := c.readLine(replyTimeout)
	assert.ErrorIs(t, err, io.EOF, "closed cleanly, got %q", line)
}

// TestLineTooLongNeverEnded: a line over the limit that never ends is
// answered at the read timeout.
func TestLineTooLongNeverEnded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{ReadTimeout: 300 * time.Millisecond})
		c := dial(t, srv)
		began := time.Now()
		c.write(strings.Repeat("x", 257))
		assert.Equal(t, "error", c.read())
		assert.Equal(t, 300*time.Millisecond, time.Since(began))
		_, err := c.readLine(replyTimeout)
		assert.ErrorIs(t, err, io.EOF)
	})
}

// TestBlockedWaitOutlivesClient checks that a client closing its end does
// not end a wait in progress: the connection stays open and counted (also
// against MaxConnections) and its wait stays in the queue until it ends.
func TestBlockedWaitOutlivesClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{MaxConnections: 2})
		holder := dial(t, srv)
		tok := strings.Fields(holder.do("l", "k", "0"))[1]
		gone := dial(t, srv)
		gone.write("l\nk\n30\n")
		addr := gone.nc.LocalAddr().String()
		srv.settle()
		_, waiting := srv.PeerState(addr)
		require.True(t, waiting)
		gone.nc.Close()

		// The server is not reading that connection, so it cannot notice.
		srv.settle()
		open, waiting := srv.PeerState(addr)
		assert.True(t, open && waiting)
		assert.Equal(t, 2, srv.Stats().Connections)
		assert.Equal(t, 1, srv.Stats().Locks[0].Waiters)
		refused := dial(t, srv)
		refused.expectClosed()

		// Granted to the dead wait, which then finds the close and releases.
		assert.Equal(t, "ok", holder.do("r", "k", tok))
		srv.settle()
		open, _ = srv.PeerState(addr)
		assert.False(t, open)
		assert.Regexp(t, "^ok ", dial(t, srv).do("l", "k", "0"))
	})
}

// TestFailedReleaseAndRenewTouchTheKey checks that a release or renew of
// a known key counts as activity even when the token is unknown: an idle
// key's idle time starts again, as in the real server.
func TestFailedReleaseAndRenewTouchTheKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		c := dial(t, srv)
		bogus := strings.Repeat("f", 32)
		c.do("r", "k", strings.Fields(c.do("l", "k", "0"))[1])
		for _, cmd := range []string{"r", "n"} {
			idle := func() float64 { return srv.Stats().IdleLocks[0].IdleS }
			time.Sleep(200 * time.Millisecond)
			assert.Equal(t, 0.2, idle())
			assert.Equal(t, "error", c.do(cmd, "k", bogus))
			assert.Zero(t, idle(), cmd)
		}
	})
}

func TestMaxConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{MaxConnections: 1})
		first := dial(t, srv)
		assert.Regexp(t, "^ok ", first.do("l", "k", "0"))
		second := dial(t, srv)
		second.write("l\nk2\n0\n")
		second.expectClosed()
		// Once the first leaves, a connection is accepted again.
		first.nc.Close()
		srv.settle()
		assert.Zero(t, srv.Stats().Connections)
		third := dial(t, srv)
		assert.Regexp(t, "^ok ", third.do("l", "k", "0"))
	})
}

func TestIdleKeysAreCollected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{MaxLocks: 1, GCInterval: 20 * time.Millisecond, GCMaxIdle: 100 * time.Millisecond})
		c := dial(t, srv)
		tok := strings.Fields(c.do("sl", "a", "0 2"))[1]
		assert.Equal(t, "ok", c.do("sr", "a", tok))
		assert.Equal(t, "error_max_locks", c.do("l", "b", "0"))
		// Idle for GCMaxIdle is not yet longer than it; the next
		// collection, GCInterval later, takes it.
		time.Sleep(100 * time.Millisecond)
		srv.settle()
		require.Len(t, srv.Stats().IdleSemaphores, 1)
		time.Sleep(20 * time.Millisecond)
		srv.settle()
		require.Empty(t, srv.Stats().IdleSemaphores)
		tok = strings.Fields(c.do("l", "b", "0"))[1]
		assert.Equal(t, "ok", c.do("r", "b", tok))
		time.Sleep(120 * time.Millisecond)
		srv.settle()
		require.Empty(t, srv.Stats().IdleLocks)
		// Collected, "a" forgot its limit.
		assert.Regexp(t, "^ok ", c.do("sl", "a", "0 3"))
	})
}

func TestDisableAutoRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{DisableAutoRelease: true})
		holder := dial(t, srv)
		tok := strings.Fields(holder.do("l", "k", "0 30"))[1]
		holder.do("e", "q", "")
		holder.nc.Close()
		srv.settle()
		assert.Zero(t, srv.Stats().Connections)
		other := dial(t, srv)
		assert.Equal(t, "timeout", other.do("l", "k", "0"), "the lock outlives its connection")
		assert.Equal(t, "ok 33", other.do("n", "k", tok), "and can be renewed by token")
		began := time.Now()
		other.write("l\nk\n40\n")
		line, err := other.readLine(time.Minute)
		require.NoError(t, err)
		assert.Regexp(t, "^ok ", line, "granted when the renewed lease ends")
		assert.Equal(t, 33*time.Second, time.Since(began).Round(time.Second), "at the sweep after the lease")
	})
}

func TestTLS(t *testing.T) {
	serverTLS, clientTLS := testcert.New(t)
	srv := startTCP(t, fakeserver.Config{TLS: serverTLS})
	nc, err := tls.Dial("tcp", srv.Addr(), clientTLS)
	require.NoError(t, err)
	defer nc.Close()
	c := &client{t: t, srv: srv, nc: nc, br: bufio.NewReader(nc)}
	tok := strings.Fields(c.do("l", "k", "0"))[1]
	// A wait on TLS that ends in a grant leaves the stream usable.
	other := dial(t, srv) // plain TCP to a TLS server: never answered
	other.nc.Close()
	c2nc, err := tls.Dial("tcp", srv.Addr(), clientTLS)
	require.NoError(t, err)
	defer c2nc.Close()
	c2 := &client{t: t, srv: srv, nc: c2nc, br: bufio.NewReader(c2nc)}
	c2.write("l\nk\n5\n")
	c2.expectSilent()
	assert.Equal(t, "ok", c.do("r", "k", tok))
	assert.Regexp(t, "^ok [0-9a-f]{32} 33$", c2.read())
	assert.Equal(t, "timeout", c2.do("l", "k", "0"), "same TLS connection, next request")
	c2nc.Close()
	tok = strings.Fields(c.do("l", "k", "5"))[1] // released with c2
	// A blocked request on TLS whose client left: its grant goes
	// nowhere, and then the close is noticed.
	c3nc, err := tls.Dial("tcp", srv.Addr(), clientTLS)
	require.NoError(t, err)
	defer c3nc.Close()
	c3 := &client{t: t, srv: srv, nc: c3nc, br: bufio.NewReader(c3nc)}
	c3.write("l\nk\n30\n")
	c3.expectSilent()
	c3nc.Close()
	assert.Equal(t, "ok", c.do("r", "k", tok))
	require.Eventually(t, func() bool { return srv.Stats().Connections == 1 }, replyTimeout, time.Millisecond)
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

	srv := startTCP(t, fakeserver.Config{DefaultLeaseTTL: 4 * time.Second})
	assert.Regexp(t, "^ok [0-9a-f]{32} 4$", dial(t, srv).do("l", "k", "0"))
}

// TestShutdownIsGraceful checks Shutdown against what the real server
// does on SIGTERM: blocked waits end with "error", open connections are
// still served (a wait that would block ends with "error" at once) until
// their read timeout closes them, and nothing new is accepted.
func TestShutdownIsGraceful(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{ReadTimeout: 1500 * time.Millisecond})
		holder := dial(t, srv)
		tok := strings.Fields(holder.do("l", "k", "0"))[1]
		blocked := dial(t, srv)
		blocked.write("l\nk\n30\n")
		twoPhase := dial(t, srv)
		assert.Equal(t, "queued", twoPhase.do("e", "k", ""))
		twoPhase.write("w\nk\n30\n")
		srv.settle()
		require.Equal(t, 2, srv.Busy())

		time.Sleep(time.Second)
		began := time.Now()
		done := make(chan error, 1)
		go func() { done <- srv.Shutdown(t.Context()) }()
		assert.Equal(t, "error", blocked.read())
		assert.Equal(t, "error", twoPhase.read())
		_, err := srv.dialRaw(t)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED, "no longer listening")

		// Still served: a try-lock, a wait that would block, a free key.
		// The holder has been silent for a second: its read timeout has
		// half a second to run.
		time.Sleep(200 * time.Millisecond)
		assert.Equal(t, "timeout", blocked.do("l", "k", "0"))
		assert.Equal(t, "error", blocked.do("l", "k", "5"))
		assert.Regexp(t, "^ok [0-9a-f]{32} 33$", blocked.do("l", "free", "5"))
		assert.Equal(t, "ok 33", holder.do("n", "k", tok))

		// The read timeout closes each connection, 1.5 s after its last
		// reply, and then Shutdown is done.
		for _, c := range []*client{holder, blocked, twoPhase} {
			assert.Equal(t, "error", c.read())
			c.expectClosed()
		}
		assert.Equal(t, 1700*time.Millisecond, time.Since(began))
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(replyTimeout):
			t.Fatal("Shutdown did not return")
		}
		assert.Equal(t, 1700*time.Millisecond, time.Since(began), "as soon as the last connection closed")
		assert.Equal(t, uint64(3), srv.ReadTimeoutCloses())
	})
}

func TestShutdownTimeoutForcesClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{ShutdownTimeout: 50 * time.Millisecond})
		idle := dial(t, srv)
		assert.Regexp(t, "^ok ", idle.do("l", "k", "0"))
		c := dial(t, srv)
		srv.Stall(time.Minute) // the request below never finishes on its own
		c.write("l\nk\n0\n")
		srv.settle()
		require.Equal(t, 1, srv.Busy())
		began := time.Now()
		assert.ErrorIs(t, srv.Shutdown(context.Background()), context.DeadlineExceeded)
		assert.Equal(t, 50*time.Millisecond, time.Since(began))
		c.expectClosed()
		// An idle connection still open at the deadline is closed without a
		// reply.
		line, err := idle.readLine(replyTimeout)
		assert.ErrorIs(t, err, io.EOF)
		assert.Empty(t, line)

		// A supervisor starts it again after the drain: same address,
		// empty, serving, and it drains again.
		srv.Unstall()
		require.NoError(t, srv.Restart())
		again := dial(t, srv)
		assert.Regexp(t, "^ok ", again.do("l", "k", "0"), "k was forgotten with the process")
		assert.Equal(t, "timeout", dial(t, srv).do("l", "k", "0"))
		assert.NoError(t, srv.Restart(), "a no-op on a running server")
		assert.ErrorIs(t, srv.Shutdown(context.Background()), context.DeadlineExceeded)
		again.expectClosed()
		require.NoError(t, srv.Close())
		assert.ErrorIs(t, srv.Restart(), fakeserver.ErrClosed, "Close is for good")
	})
}

func TestFleet(t *testing.T) {
	f, err := fakeserver.StartFleet(3, fakeserver.Config{})
	require.NoError(t, err)
	defer f.Close()
	addrs := f.Addrs()
	require.Len(t, addrs, 3)
	assert.NotEqual(t, addrs[0], addrs[1])
	for _, s := range f.Servers {
		assert.Regexp(t, "^ok ", dial(t, &testServer{Server: s}).do("l", "same-key", "0"), "each server has its own state")
	}
	_, err = fakeserver.StartFleet(0, fakeserver.Config{})
	assert.Error(t, err)
}
