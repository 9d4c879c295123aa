package fakeserver_test

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/wire"
)

// TestProtocol plays one conversation per rule of PROTOCOL.md against a
// fresh server.
func TestProtocol(t *testing.T) {
	cases := []struct {
		name   string
		cfg    fakeserver.Config
		script string
	}{
		{name: "lock and release", script: `
			0> l k 10
			0< ok $A 33
			0> r k $A
			0< ok
			0> r k $A
			0< error`},
		{name: "custom lease is echoed", script: `
			0> l k 0 7
			0< ok $A 7
			0> sl s 0 2 9
			0< ok $B 9`},
		{name: "try-lock never blocks", script: `
			0> l k 0
			0< ok $A 33
			1> l k 0
			1< timeout`},
		{name: "release and renew from another connection", script: `
			0> l k 0
			0< ok $A 33
			1> n k $A 20
			1< ok 20
			1> r k $A
			1< ok
			2> l k 0
			2< ok $B 33`},
		{name: "release and renew errors", script: `
			0> r nokey 0123456789abcdef0123456789abcdef
			0< error
			0> n nokey 0123456789abcdef0123456789abcdef
			0< error
			0> l k 0
			0< ok $A 33
			0> r k ffffffffffffffffffffffffffffffff
			0< error
			0> n k ffffffffffffffffffffffffffffffff
			0< error
			0> sr k ffffffffffffffffffffffffffffffff
			0< error`},
		{name: "renew without lease resets to the default", script: `
			0> l k 0 5
			0< ok $A 5
			0> n k $A
			0< ok 33
			0> n k $A 5
			0< ok 5`},
		{name: "grants are FIFO", script: `
			0> l k 0
			0< ok $A 33
			1> l k 5
			1~
			2> l k 5
			2~
			3> l k 0
			3< timeout
			0> r k $A
			0< ok
			1< ok $B 33
			2~
			1> r k $B
			1< ok
			2< ok $C 33`},
		{name: "blocking lock times out and leaves the queue", script: `
			0> l k 0
			0< ok $A 33
			1> l k 1
			1< timeout
			0> r k $A
			0< ok
			2> l k 0
			2< ok $B 33`},
		{name: "disconnect releases and hands over", script: `
			0> l k 0
			0< ok $A 33
			0> l k2 0
			0< ok $B 33
			1> l k 5
			1~
			0 close
			1< ok $C 33
			2> l k2 0
			2< ok $D 33`},
		{name: "a blocked wait outlives its closed connection", cfg: fakeserver.Config{MaxWaiters: 1}, script: `
			// The real server does not read while it handles a request, so
			// closing the connection does not cancel the wait in it.
			0> l k 0
			0< ok $A 33
			1> l k 30
			1~
			1 hangup
			// Still in line, so the queue is still full.
			2> l k 0
			2< error_max_waiters
			// The dead wait is granted; only when its reply has gone out
			// does the server read, find the close, and release.
			0> r k $A
			0< ok
			2> l k 5
			2< ok $B 33`},
		{name: "a half-closed connection still gets its blocked reply", script: `
			0> l k 0
			0< ok $A 33
			1> l k 30
			1~
			1 halfclose
			0> r k $A
			0< ok
			1< ok $B 33
			// Only now does the server read, find the end, and release.
			1<closed
			2> l k 5
			2< ok $C 33`},
		{name: "disconnect drops queued enqueues", script: `
			0> l k 0
			0< ok $A 33
			1> e k
			1< queued
			1 close
			0> r k $A
			0< ok
			2> l k 0
			2< ok $B 33`},
		{name: "lease expiry hands over (sweep)", script: `
			0> l k 0 1
			0< ok $A 1
			1> l k 5
			1< ok $B 33
			0> n k $A
			0< error`},
		{name: "expired holder cannot renew", script: `
			0> l k 0
			0< ok $A 33
			expire k
			0> n k $A
			0< error
			0> r k $A
			0< error`},
		{name: "expiry hands over to the next waiter", script: `
			0> l k 0
			0< ok $A 33
			1> l k 5
			1~
			expire k
			1< ok $B 33`},
		{name: "semaphore slots", script: `
			0> sl s 0 2
			0< ok $A 33
			1> sl s 0 2
			1< ok $B 33
			2> sl s 0 2
			2< timeout
			2> sl s 5 2
			2~
			0> sr s $A
			0< ok
			2< ok $C 33
			1> sn s $B 4
			1< ok 4`},
		{name: "limit mismatch", script: `
			0> sl s 0 3
			0< ok $A 33
			0> l s 0
			0< error_limit_mismatch
			0> sl s 0 2
			0< error_limit_mismatch
			0> se s 4
			0< error_limit_mismatch
			0> l k 0
			0< ok $B 33
			0> sl k 0 2
			0< error_limit_mismatch
			0> e k
			0< queued`},
		{name: "a lock is a semaphore of limit 1", script: `
			0> l k 0
			0< ok $A 33
			0> r k $A
			0< ok
			1> sl k 0 1
			1< ok $B 33
			2> l k 0
			2< timeout
			2> sr k $B
			2< ok`},
		{name: "limit persists while the key is idle", script: `
			0> sl s 0 2
			0< ok $A 33
			0> sr s $A
			0< ok
			0> sl s 0 5
			0< error_limit_mismatch`},
		{name: "enqueue free key then wait", script: `
			0> e k 9
			0< acquired $A 9
			1> l k 0
			1< timeout
			0> w k 5
			0< ok $A 9
			0> w k 5
			0< error_not_enqueued
			0> r k $A
			0< ok`},
		{name: "enqueue twice", script: `
			0> e k
			0< acquired $A 33
			0> e k
			0< error_already_enqueued
			1> e k
			1< queued
			1> se k 1
			1< error_already_enqueued`},
		{name: "wait without enqueue", script: `
			0> w k 1
			0< error_not_enqueued
			0> sw k 0
			0< error_not_enqueued`},
		{name: "wait must use the enqueueing connection", script: `
			0> e k
			0< acquired $A 33
			1> w k 1
			1< error_not_enqueued
			0> w k 1
			0< ok $A 33`},
		{name: "queued enqueue granted before wait", script: `
			0> l k 0
			0< ok $A 33
			1> e k 8
			1< queued
			0> r k $A
			0< ok
			2> l k 0
			2< timeout
			1> w k 5
			1< ok $B 8`},
		{name: "queued wait blocks until granted", script: `
			0> l k 0
			0< ok $A 33
			1> e k
			1< queued
			1> w k 5
			1~
			0> r k $A
			0< ok
			1< ok $B 33`},
		{name: "wait timeout drops the registration", script: `
			0> l k 0
			0< ok $A 33
			1> e k
			1< queued
			1> w k 0
			1< timeout
			1> w k 1
			1< error_not_enqueued
			0> r k $A
			0< ok
			2> l k 0
			2< ok $B 33`},
		{name: "wait after the grant lapsed, not swept yet", cfg: fakeserver.Config{LeaseSweepInterval: time.Hour}, script: `
			0> e k 5
			0< acquired $A 5
			1> l k 5
			1~
			lapse k
			0> w k 1
			0< error_lease_expired
			1< ok $B 33
			0> w k 1
			0< error_not_enqueued`},
		{name: "wait after the grant expired and was swept", script: `
			// Evicting the holder ends the registration with it.
			0> e k 5
			0< acquired $A 5
			expire k
			0> w k 1
			0< error_not_enqueued`},
		{name: "wait after the grant was evicted by another request", cfg: fakeserver.Config{LeaseSweepInterval: time.Hour}, script: `
			0> e k 5
			0< acquired $A 5
			lapse k
			1> l k 0
			1< ok $B 33
			0> w k 1
			0< error_not_enqueued`},
		{name: "wait after the grant was released", script: `
			0> e k
			0< acquired $A 33
			1> r k $A
			1< ok
			0> w k 1
			0< error_not_enqueued
			0> e k
			0< acquired $B 33
			0> w k 0
			0< ok $B 33`},
		{name: "wait after the grant was refused a renew", cfg: fakeserver.Config{LeaseSweepInterval: time.Hour}, script: `
			0> e k 5
			0< acquired $A 5
			lapse k
			0> n k $A
			0< error
			0> w k 1
			0< error_not_enqueued`},
		{name: "wait answers a queued grant that lapsed, and renews it", cfg: fakeserver.Config{LeaseSweepInterval: time.Hour}, script: `
			0> l k 0
			0< ok $A 33
			1> e k 5
			1< queued
			0> r k $A
			0< ok
			lapse k
			// Not evicted yet: the wait gives it a fresh lease.
			1> w k 1
			1< ok $B 5
			1> n k $B
			1< ok 33
			2> l k 0
			2< timeout`},
		{name: "wait answers a queued grant that expired, though gone", script: `
			0> l k 0
			0< ok $A 33
			1> e k 5
			1< queued
			0> r k $A
			0< ok
			expire k
			// The grant was made; the wait reports it although the
			// server no longer holds it.
			1> w k 1
			1< ok $B 5
			1> r k $B
			1< error
			2> l k 0
			2< ok $C 33`},
		{name: "semaphore two-phase", script: `
			0> se s 1
			0< acquired $A 33
			1> se s 1 6
			1< queued
			0> sw s 0
			0< ok $A 33
			0> sr s $A
			0< ok
			1> sw s 5
			1< ok $B 6`},
		{name: "violations answer error and keep the connection", script: `
			0> x k 1
			0< error
			0> l k
			0< error
			0> l k x
			0< error
			0> l k -1
			0< error
			0> l k 1 0
			0< error
			0> l k 1 2 3
			0< error
			0>> "l\n\n1\n"
			0< error
			0>> "l\n \n1\n"
			0< error
			0>> "l\na b\n1\n"
			0< error
			0>> "r\nk\n\n"
			0< error
			0> n k
			0< error
			0> e k 0
			0< error
			0> e k x
			0< error
			0> w k
			0< error
			0> w k -3
			0< error
			0> sl s 1 0
			0< error
			0> sl s 1
			0< error
			0> se s -2
			0< error
			0> l k 0
			0< ok $A 33`},
		{name: "lenient argument syntax", script: `
			0>> "l\nk\n  +0   07 \r\n"
			0< ok $A 7
			0>> "r\r\nk\r\n$A\r\n"
			0< error
			0> r k $A
			0< ok`},
		{name: "line of 256 bytes is fine, 257 closes", script: `
			0>> "l\n` + strings.Repeat("k", 256) + `\n0\n"
			0< ok $A 33
			0>> "l\n` + strings.Repeat("k", 257) + `\n0\n"
			0< error
			0<closed`},
		{name: "trailing CR counts toward the line length", script: `
			0>> "l\n` + strings.Repeat("k", 256) + `\r\n0\n"
			0< error
			0<closed`},
		{name: "too long a line releases what the connection held", script: `
			0> l k 0
			0< ok $A 33
			1> l k 5
			0>> "` + strings.Repeat("x", 300) + `\n"
			0< error
			0<closed
			1< ok $B 33`},
		{name: "pipelined replies come in order", script: `
			0>> "l\na\n0\nl\nb\n0\nl\na\n0\nstats\n_\n\nx\n_\n_\nl\nc\n0 5\n"
			0< ok $A 33
			0< ok $B 33
			0< timeout
			0< ok *
			0< error
			0< ok $C 5`},
		{name: "a blocking request holds up the ones behind it", script: `
			0> l k 0
			0< ok $A 33
			1>> "l\nk\n5\nl\nother\n0\n"
			1~
			0> r k $A
			0< ok
			1< ok $B 33
			1< ok $C 33`},
		{name: "max waiters", cfg: fakeserver.Config{MaxWaiters: 1}, script: `
			0> l k 0
			0< ok $A 33
			1> l k 5
			1~
			2> l k 5
			2< error_max_waiters
			2> e k
			2< error_max_waiters
			// A try-lock is refused for the full queue, not timed out.
			2> l k 0
			2< error_max_waiters
			2> sl k 0 1
			2< error_max_waiters
			2> sl k 0 2
			2< error_limit_mismatch
			2> l free 0
			2< ok $B 33`},
		{name: "try-lock on a full semaphore queue", cfg: fakeserver.Config{MaxWaiters: 1}, script: `
			0> sl s 0 2
			0< ok $A 33
			0> sl s 0 2
			0< ok $B 33
			1> se s 2
			1< queued
			2> sl s 0 2
			2< error_max_waiters
			1> sw s 0
			1< timeout
			2> sl s 0 2
			2< timeout`},
		{name: "max locks counts idle keys", cfg: fakeserver.Config{MaxLocks: 2}, script: `
			0> l a 0
			0< ok $A 33
			0> sl b 0 2
			0< ok $B 33
			0> l c 0
			0< error_max_locks
			0> se c 2
			0< error_max_locks
			0> r a $A
			0< ok
			0> l c 0
			0< error_max_locks
			0> l a 0
			0< ok $C 33`},
		{name: "numbers beyond 32 bits wrap as in the real server", script: `
			0> l a 0 3000000000
			0< ok $A 3000000000
			// 18446744074 s wraps to 0.29 s: a grant of "0" seconds is
			// shown with the default lease.
			0> l b 0 18446744074
			0< ok $B 33
			0> n a $A 18446744074
			0< ok 0
			0> l c 0 9223372037
			0< error
			// e checks the lease before it wraps: granted, already expired.
			0> e d 9223372037
			0< acquired $C -9223372036
			0> sl s 0 3000000000
			0< ok $D 33
			0> l a 0 99999999999999999999
			0< error
			// A timeout that wraps negative does not wait.
			0> l k 0
			0< ok $F 33
			1> l k 9223372037
			1< timeout`},
		{name: "renew evicts only its own expired holder", cfg: fakeserver.Config{LeaseSweepInterval: time.Hour}, script: `
			0> sl s 0 2
			0< ok $A 33
			1> sl s 0 2
			1< ok $B 33
			2> sl s 30 2
			2~
			lapse s $A
			1> sn s $B
			1< ok 33
			1> sn s ffffffffffffffffffffffffffffffff
			1< error
			// A, expired, still fills its slot.
			2~
			1> sr s $B
			1< ok
			2< ok $C 33
			0> sn s $A
			0< error
			3> sl s 0 2
			3< ok $D 33`},
		{name: "release of an expired holder not swept yet", cfg: fakeserver.Config{LeaseSweepInterval: time.Hour}, script: `
			0> l k 0
			0< ok $A 33
			lapse k
			0> r k $A
			0< ok`},
		{name: "auto-release disabled: a closed connection's queued enqueue is granted to nobody",
			cfg: fakeserver.Config{DisableAutoRelease: true}, script: `
			0> l k 0
			0< ok $A 33
			1> e k 30
			1< queued
			1 close
			0> r k $A
			0< ok
			2> l k 0
			2< timeout
			expire k
			2> l k 0
			2< ok $B 33`},
		{name: "auth on a server without a token", script: `
			0> auth _ secret
			0< error
			0> l k 0
			0< ok $A 33`},
		{name: "auth accepted", cfg: fakeserver.Config{AuthToken: "s3cret"}, script: `
			0> auth _ s3cret
			0< ok
			0> l k 0
			0< ok $A 33
			0> auth _ s3cret
			0< error`},
		{name: "auth wrong secret", cfg: fakeserver.Config{AuthToken: "s3cret"}, script: `
			0> auth _ s3cre
			0< error_auth
			0<closed`},
		{name: "auth missing", cfg: fakeserver.Config{AuthToken: "s3cret"}, script: `
			0> l k 0
			0< error_auth
			0<closed`},
		{name: "auth malformed first request", cfg: fakeserver.Config{AuthToken: "s3cret"}, script: `
			0> bogus k 0
			0< error_auth
			0<closed`},
		{name: "auth: a client that stops sending still gets error_auth", cfg: fakeserver.Config{AuthToken: "s3cret"}, script: `
			0>> "auth\n_\n"
			0 halfclose
			0< error_auth
			0<closed`},
		{name: "auth: the secret is trimmed, inner spaces kept", cfg: fakeserver.Config{AuthToken: "a b"}, script: `
			0>> "auth\nany key\n \ta b\r\n"
			0< ok
			1> auth _ a  b
			1< error_auth
			1<closed`},
	}
	// Each script runs in a bubble over memnet, where a step that waits
	// for the clock (a lease, a timeout) takes no real time, and over
	// loopback TCP, which is what the real server speaks.
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			onBoth(t, func(t *testing.T, start func(*testing.T, fakeserver.Config) *testServer) {
				runScript(t, start(t, c.cfg), c.script)
			})
		})
	}
}

func TestStatsDocument(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{})
		c := dial(t, srv)
		assert.Equal(t, `ok {"connections":1,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}`, c.do("stats", "_", ""))

		tok := strings.Fields(c.do("l", "held", "0 10"))[1]
		c.do("sl", "sem", "0 3")
		w := dial(t, srv)
		w.write("l\nheld\n5\n")
		c.do("r", "idle", strings.Fields(c.do("l", "idle", "0"))[1])
		srv.settle()
		time.Sleep(1500 * time.Millisecond)

		line := c.do("stats", "ignored", "ignored")
		body, ok := strings.CutPrefix(line, "ok ")
		require.True(t, ok, line)
		st, err := wire.ParseStats(body)
		require.NoError(t, err)
		assert.Equal(t, 2, st.Connections)
		require.Len(t, st.Locks, 1)
		assert.Equal(t, "held", st.Locks[0].Key)
		assert.Equal(t, 1, st.Locks[0].Waiters)
		assert.NotZero(t, st.Locks[0].OwnerConnID)
		assert.Equal(t, 8.5, st.Locks[0].LeaseExpiresInS)
		assert.Equal(t, []wire.SemaphoreInfo{{Key: "sem", Limit: 3, Holders: 1}}, st.Semaphores)
		require.Len(t, st.IdleLocks, 1)
		assert.Equal(t, "idle", st.IdleLocks[0].Key)
		assert.Equal(t, 1.5, st.IdleLocks[0].IdleS)
		assert.Empty(t, st.IdleSemaphores)

		// Releasing hands "held" to the waiting connection, a new owner.
		owner := st.Locks[0].OwnerConnID
		assert.Equal(t, "ok", c.do("r", "held", tok))
		assert.Regexp(t, `^ok [0-9a-f]{32} 33$`, w.read())
		st = srv.Stats()
		assert.NotEqual(t, owner, st.Locks[0].OwnerConnID)
		assert.Zero(t, st.Locks[0].Waiters)
	})
}

// TestStatsShowsAnExpiredLeaseAsZero: a holder whose lease ran out but
// that no sweep has evicted yet is listed with 0 seconds left, never less.
func TestStatsShowsAnExpiredLeaseAsZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := start(t, fakeserver.Config{LeaseSweepInterval: time.Hour})
		c := dial(t, srv)
		c.do("l", "k", "0 1")
		time.Sleep(2 * time.Second)
		assert.Contains(t, c.do("stats", "_", ""), `"lease_expires_in_s":0,`)
		assert.Zero(t, srv.Stats().Locks[0].LeaseExpiresInS)
		require.Equal(t, 1, srv.Lapse("k", ""), "still in the table")
	})
}
