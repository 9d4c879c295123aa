package fakeserver_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
)

func TestDropConnections(t *testing.T) {
	srv := start(t, fakeserver.Config{})
	a := dial(t, srv.Addr())
	b := dial(t, srv.Addr())
	assert.Regexp(t, "^ok ", a.do("l", "k", "0"))
	b.write("l\nk\n30\n")
	b.expectSilent()

	assert.Equal(t, 2, srv.DropConnections())
	a.expectClosed()
	b.expectClosed()
	st := srv.Stats()
	assert.Zero(t, st.Connections)
	assert.Empty(t, st.Locks, "released when DropConnections returns")
	assert.Regexp(t, "^ok ", dial(t, srv.Addr()).do("l", "k", "0"), "still serving")
}

func TestStall(t *testing.T) {
	srv := start(t, fakeserver.Config{})
	c := dial(t, srv.Addr())
	srv.Stall(time.Minute)
	c.write("l\nk\n0\n")
	c.expectSilent()
	srv.Unstall()
	assert.Regexp(t, "^ok ", c.read())

	// A short stall ends by itself.
	srv.Stall(100 * time.Millisecond)
	began := time.Now()
	assert.Equal(t, "timeout", c.do("l", "k", "0"))
	assert.GreaterOrEqual(t, time.Since(began), 90*time.Millisecond)
}

func TestStalledConnectionCanBeDropped(t *testing.T) {
	srv := start(t, fakeserver.Config{})
	c := dial(t, srv.Addr())
	srv.Stall(time.Minute)
	c.write("l\nk\n0\n")
	c.expectSilent()
	assert.Equal(t, 1, srv.DropConnections())
	c.expectClosed()
}

func TestRefuseConnections(t *testing.T) {
	srv := start(t, fakeserver.Config{})
	open := dial(t, srv.Addr())
	assert.Regexp(t, "^ok ", open.do("l", "k", "0"), "accepted before refusing starts")
	srv.RefuseConnections(true)
	refused := dial(t, srv.Addr())
	refused.write("l\nk\n0\n")
	refused.expectClosed()
	assert.Equal(t, "timeout", open.do("l", "k", "0"), "open connections keep working")
	srv.RefuseConnections(false)
	assert.Equal(t, "timeout", dial(t, srv.Addr()).do("l", "k", "0"))
}

func TestStopRestart(t *testing.T) {
	srv := start(t, fakeserver.Config{})
	addr := srv.Addr()
	c := dial(t, addr)
	tok := strings.Fields(c.do("l", "k", "0"))[1]

	require.NoError(t, srv.Stop())
	c.expectClosed()
	_, err := dialErr(addr)
	require.Error(t, err, "nothing listens while stopped")

	require.NoError(t, srv.Restart())
	assert.Equal(t, addr, srv.Addr())
	d := dial(t, addr)
	assert.Equal(t, "error", d.do("r", "k", tok), "a restarted server forgot everything")
	assert.Regexp(t, "^ok ", d.do("l", "k", "0"))
	require.NoError(t, srv.Restart(), "restarting a running server is a no-op")

	require.NoError(t, srv.Close())
	assert.ErrorIs(t, srv.Restart(), fakeserver.ErrClosed)
	assert.ErrorIs(t, srv.Stop(), fakeserver.ErrClosed)
}

func TestExpireNow(t *testing.T) {
	srv := start(t, fakeserver.Config{})
	c := dial(t, srv.Addr())
	c.do("sl", "s", "0 3")
	c.do("sl", "s", "0 3")
	assert.Equal(t, 2, srv.ExpireNow("s"))
	assert.Equal(t, 0, srv.ExpireNow("s"))
	assert.Equal(t, 0, srv.ExpireNow("unknown"))
	assert.Empty(t, srv.Stats().Semaphores)
	assert.Equal(t, "s", srv.Stats().IdleSemaphores[0].Key)
}
