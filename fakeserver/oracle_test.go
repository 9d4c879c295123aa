package fakeserver_test

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
)

// token takes the token out of an "ok TOKEN LEASE" or "acquired ..." reply.
func token(t *testing.T, reply string) string {
	t.Helper()
	f := strings.Fields(reply)
	require.Len(t, f, 3, "reply %q", reply)
	return f[1]
}

func TestTokenStateHeldReleasedUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		c := dial(t, srv)
		tok := token(t, c.do("l", "k", "0 10"))

		st := srv.TokenState("k", tok)
		assert.True(t, st.Held)
		assert.Equal(t, srv.Stats().Locks[0].OwnerConnID, st.Conn, "the owner's server-side connection id")
		assert.Equal(t, 10*time.Second, st.LeaseLeft)
		assert.False(t, st.Faulted)
		assert.Equal(t, fakeserver.TokenState{}, srv.TokenState("other", tok), "the token is per key")
		assert.Equal(t, fakeserver.TokenState{}, srv.TokenState("k", strings.Repeat("0", 32)))

		assert.Equal(t, "ok", c.do("r", "k", tok))
		assert.Equal(t, fakeserver.TokenState{}, srv.TokenState("k", tok), "released, no fault")
		assert.Zero(t, srv.FaultCount())
	})
}

func TestTokenStateExpiredNotSwept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{LeaseSweepInterval: time.Hour})
		c := dial(t, srv)
		tok := token(t, c.do("l", "k", "0 1"))
		time.Sleep(999 * time.Millisecond)
		assert.Equal(t, time.Millisecond, srv.TokenState("k", tok).LeaseLeft)
		time.Sleep(time.Millisecond)
		st := srv.TokenState("k", tok)
		assert.Zero(t, st.LeaseLeft)
		assert.True(t, st.Held, "expired but not swept: still in the table")
		assert.False(t, st.Faulted, "an expiry by lease is no fault")
		assert.Equal(t, "error", c.do("n", "k", tok), "the server treats it as gone")
		assert.False(t, srv.TokenState("k", tok).Held)
	})
}

func TestTokenStateExpireNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		a, b := dial(t, srv), dial(t, srv)
		tok := token(t, a.do("l", "k", "0"))
		other := token(t, a.do("l", "k2", "0"))
		b.write("l\nk\n5\n")
		srv.settle()
		require.Equal(t, 1, srv.Stats().Locks[0].Waiters)

		assert.Equal(t, 1, srv.ExpireNow("k"))
		assert.Equal(t, uint64(1), srv.FaultCount())
		assert.Equal(t, fakeserver.TokenState{Faulted: true}, srv.TokenState("k", tok))
		assert.False(t, srv.TokenState("k2", other).Faulted, "ExpireNow faults its key only")
		next := token(t, b.read())
		st := srv.TokenState("k", next)
		assert.True(t, st.Held)
		assert.False(t, st.Faulted, "granted after the fault")
		assert.NotEqual(t, srv.TokenState("k2", other).Conn, st.Conn)
	})
}

func TestTokenStateStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		a, b := dial(t, srv), dial(t, srv)
		before := token(t, a.do("l", "k", "0"))
		released := token(t, a.do("l", "r", "0"))
		b.write("l\nk\n30\n")
		srv.settle()
		require.Equal(t, 1, srv.Stats().Locks[0].Waiters)

		srv.Stall(time.Minute)
		assert.True(t, srv.TokenState("k", before).Faulted, "a stall overlaps the hold")
		// b's request is being handled already: a grant reaches it during the
		// stall, while no request can reach the server.
		srv.ExpireNow("k")
		during := token(t, b.read())
		assert.True(t, srv.TokenState("k", during).Faulted, "granted while a stall is in force")
		srv.Unstall()
		assert.True(t, srv.TokenState("k", during).Faulted, "the stall overlapped the hold, even if over now")
		assert.Equal(t, "ok", a.do("r", "r", released))
		assert.Equal(t, fakeserver.TokenState{Faulted: true}, srv.TokenState("r", released), "remembered after release")

		after := token(t, a.do("l", "k3", "0"))
		assert.False(t, srv.TokenState("k3", after).Faulted, "granted after the stall ended")

		// A short stall that ends by itself: the request it held is granted
		// after it, so not faulted; the holder from before is.
		srv.Stall(50 * time.Millisecond)
		late := token(t, a.do("l", "k4", "0"))
		assert.False(t, srv.TokenState("k4", late).Faulted)
		assert.True(t, srv.TokenState("k3", after).Faulted)
		assert.Equal(t, uint64(3), srv.FaultCount(), "two stalls and an ExpireNow")
	})
}

func TestTokenStateDropConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, keep := range []bool{false, true} {
			srv := start(t, fakeserver.Config{DisableAutoRelease: keep})
			c := dial(t, srv)
			tok := token(t, c.do("l", "k", "0"))
			conn := srv.TokenState("k", tok).Conn
			assert.Equal(t, 1, srv.DropConnections())
			st := srv.TokenState("k", tok)
			assert.True(t, st.Faulted)
			if keep {
				assert.True(t, st.Held, "auto-release disabled: held by a closed connection")
				assert.Equal(t, conn, st.Conn)
			} else {
				assert.Equal(t, fakeserver.TokenState{Faulted: true}, st)
			}
			d := dial(t, srv)
			fresh := token(t, d.do("l", "k2", "0"))
			st = srv.TokenState("k2", fresh)
			assert.True(t, st.Held)
			assert.False(t, st.Faulted, "granted after the fault")
			assert.NotEqual(t, conn, st.Conn)
			assert.Equal(t, uint64(1), srv.FaultCount())
		}
	})
}

func TestTokenStateRefuseConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		c := dial(t, srv)
		before := token(t, c.do("l", "a", "0"))
		srv.RefuseConnections(true)
		during := token(t, c.do("l", "b", "0"))
		assert.True(t, srv.TokenState("a", before).Faulted)
		assert.True(t, srv.TokenState("b", during).Faulted, "granted while refusing")
		srv.RefuseConnections(false)
		after := token(t, c.do("l", "c", "0"))
		assert.True(t, srv.TokenState("b", during).Faulted, "the refusal overlapped the hold")
		assert.False(t, srv.TokenState("c", after).Faulted)
		assert.Equal(t, uint64(1), srv.FaultCount())
	})
}

func TestTokenStateStopRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		c := dial(t, srv)
		tok := token(t, c.do("l", "k", "0"))
		require.NoError(t, srv.Stop())
		assert.Equal(t, fakeserver.TokenState{Faulted: true}, srv.TokenState("k", tok))
		require.NoError(t, srv.Restart())
		require.NoError(t, srv.Restart(), "a no-op, no fault")
		assert.Equal(t, uint64(2), srv.FaultCount())
		fresh := token(t, dial(t, srv).do("l", "k", "0"))
		st := srv.TokenState("k", fresh)
		assert.True(t, st.Held)
		assert.False(t, st.Faulted)
	})
}

func TestTokenStateSemaphoreSlots(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		a, b := dial(t, srv), dial(t, srv)
		ta := token(t, a.do("sl", "s", "0 2 10"))
		tb := token(t, b.do("se", "s", "2"))
		sa, sb := srv.TokenState("s", ta), srv.TokenState("s", tb)
		assert.True(t, sa.Held)
		assert.True(t, sb.Held)
		assert.NotEqual(t, sa.Conn, sb.Conn, "each slot has its owner")
		assert.Equal(t, 10*time.Second, sa.LeaseLeft)
		assert.Equal(t, 33*time.Second, sb.LeaseLeft)
		assert.False(t, sa.Faulted || sb.Faulted)

		assert.Equal(t, "ok", a.do("sr", "s", ta))
		assert.Equal(t, fakeserver.TokenState{}, srv.TokenState("s", ta))
		assert.True(t, srv.TokenState("s", tb).Held, "the other slot is unaffected")
		assert.Equal(t, 1, srv.ExpireNow("s"))
		assert.Equal(t, fakeserver.TokenState{Faulted: true}, srv.TokenState("s", tb))
		assert.Equal(t, fakeserver.TokenState{}, srv.TokenState("s", ta), "released before the fault")
	})
}

// A fault outside the server (a partition in a proxy) changes nothing in
// it, but excuses a client for giving up what it held before.
func TestNoteFault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		c := dial(t, srv)
		tok := token(t, c.do("l", "k", "0 10"))
		srv.NoteFault()
		st := srv.TokenState("k", tok)
		assert.True(t, st.Held, "still held")
		assert.True(t, st.Faulted)
		assert.Equal(t, uint64(1), srv.FaultCount())
		after := token(t, c.do("l", "k2", "0 10"))
		assert.False(t, srv.TokenState("k2", after).Faulted, "a grant after the fault")
	})
}
