package fakeserver_test

import (
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
)

func TestDropConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		a := dial(t, srv)
		b := dial(t, srv)
		assert.Regexp(t, "^ok ", a.do("l", "k", "0"))
		b.write("l\nk\n30\n")
		b.expectSilent()

		assert.Equal(t, 2, srv.DropConnections())
		a.expectClosed()
		b.expectClosed()
		st := srv.Stats()
		assert.Zero(t, st.Connections)
		assert.Empty(t, st.Locks, "released when DropConnections returns")
		assert.Regexp(t, "^ok ", dial(t, srv).do("l", "k", "0"), "still serving")
	})
}

func TestStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		c := dial(t, srv)
		srv.Stall(time.Minute)
		c.write("l\nk\n0\n")
		c.expectSilent()
		srv.Unstall()
		assert.Regexp(t, "^ok ", c.read())

		// A short stall ends by itself, to the nanosecond.
		srv.Stall(100 * time.Millisecond)
		began := time.Now()
		assert.Equal(t, "timeout", c.do("l", "k", "0"))
		assert.Equal(t, 100*time.Millisecond, time.Since(began))
	})
}

func TestStalledConnectionCanBeDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		c := dial(t, srv)
		srv.Stall(time.Minute)
		c.write("l\nk\n0\n")
		c.expectSilent()
		assert.Equal(t, 1, srv.DropConnections())
		c.expectClosed()
	})
}

func TestRefuseConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		open := dial(t, srv)
		assert.Regexp(t, "^ok ", open.do("l", "k", "0"), "accepted before refusing starts")
		srv.RefuseConnections(true)
		refused := dial(t, srv)
		refused.write("l\nk\n0\n")
		refused.expectClosed()
		assert.Equal(t, "timeout", open.do("l", "k", "0"), "open connections keep working")
		srv.RefuseConnections(false)
		assert.Equal(t, "timeout", dial(t, srv).do("l", "k", "0"))
	})
}

// TestStopRestart runs on TCP too: listening again on the address just
// closed is what a real socket may refuse.
func TestStopRestart(t *testing.T) {
	onBoth(t, func(t *testing.T, start func(*testing.T, fakeserver.Config) *testServer) {
		srv := start(t, fakeserver.Config{})
		addr := srv.Addr()
		c := dial(t, srv)
		tok := strings.Fields(c.do("l", "k", "0"))[1]

		require.NoError(t, srv.Stop())
		c.expectClosed()
		_, err := srv.dialRaw(t)
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "nothing listens while stopped")

		require.NoError(t, srv.Restart())
		assert.Equal(t, addr, srv.Addr())
		d := dial(t, srv)
		assert.Equal(t, "error", d.do("r", "k", tok), "a restarted server forgot everything")
		assert.Regexp(t, "^ok ", d.do("l", "k", "0"))
		require.NoError(t, srv.Restart(), "restarting a running server is a no-op")

		require.NoError(t, srv.Close())
		assert.ErrorIs(t, srv.Restart(), fakeserver.ErrClosed)
		assert.ErrorIs(t, srv.Stop(), fakeserver.ErrClosed)
	})
}

func TestExpireNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		c := dial(t, srv)
		c.do("sl", "s", "0 3")
		c.do("sl", "s", "0 3")
		assert.Equal(t, 2, srv.ExpireNow("s"))
		assert.Equal(t, 0, srv.ExpireNow("s"))
		assert.Equal(t, 0, srv.ExpireNow("unknown"))
		assert.Empty(t, srv.Stats().Semaphores)
		assert.Equal(t, "s", srv.Stats().IdleSemaphores[0].Key)
	})
}
