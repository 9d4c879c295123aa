package pool_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/memnet"
	"github.com/dflock-go/dflock/internal/testcert"
	"github.com/dflock-go/dflock/internal/testlog"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// Hazard 3: a connection that holds a lock survives idle periods longer
// than the server's read timeout, even when renewals (here every 5 s, sent
// on other connections) are rarer than that timeout (2 s). A minute of it
// runs in virtual time.
func TestHeldLockSurvivesReadTimeout(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{ReadTimeout: 2 * time.Second})
		var logs testlog.Buffer
		p := e.pool(srv.Addr(), pool.Config{ServerReadTimeout: 2 * time.Second, Logger: logs.Logger()})

		// A blocking acquire: the lock lives on an exclusive connection that
		// then sits idle in the pool.
		res, err := p.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: 5, Lease: 10})
		require.NoError(t, err)
		require.NoError(t, res.Resp.Err())
		var lost atomic.Bool
		res.Grant.OnLost(func(error) { lost.Store(true) })
		owner := heldBy(srv, "k")

		for range 12 {
			time.Sleep(5 * time.Second)
			errs := p.Renew(ctxFor(t, wait), []pool.Renewal{{Grant: res.Grant, Lease: 10}})
			require.NoError(t, errs[0], "renewal")
			assert.True(t, res.Grant.Deadline().After(time.Now()), "the keep-alives keep the read-timeout bound ahead")
		}
		assert.False(t, lost.Load())
		assert.Zero(t, srv.ReadTimeoutCloses())
		assert.Equal(t, owner, heldBy(srv, "k"), "still held by the same connection")
		assert.Zero(t, p.Stats().BrokenConns)
		assert.NotContains(t, logs.String(), "lost")
	})
}

// Dropping every connection tells each holder at once, and the pool
// dials again for the next request.
func TestDroppedConnectionsNotifyHoldersAndRedial(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		var logs testlog.Buffer
		p := e.pool(srv.Addr(), pool.Config{Logger: logs.Logger()})
		var lost atomic.Int32
		for _, k := range []string{"a", "b", "c"} {
			g := grant(t, p, k)
			g.OnLost(func(err error) {
				assert.ErrorIs(t, err, pool.ErrBroken)
				lost.Add(1)
			})
		}
		res, err := p.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "d", Timeout: 5})
		require.NoError(t, err)
		res.Grant.OnLost(func(error) { lost.Add(1) })
		dials := p.Stats().Dials

		srv.DropConnections()
		synctest.Wait()
		assert.Equal(t, int32(4), lost.Load(), "every holder told")
		// The broken connections are gone; a new one may carry the releases
		// of their lost grants (see TestLocksOfABrokenConnectionAreReleasedElsewhere).
		st := p.Stats()
		assert.Zero(t, st.Grants)
		assert.GreaterOrEqual(t, st.BrokenConns, uint64(2))
		assert.Empty(t, srv.Stats().Locks)
		assert.Contains(t, logs.String(), "no longer holds what it granted")

		grant(t, p, "a")
		assert.Greater(t, p.Stats().Dials, dials, "dialled again")
		pin, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		pin.Unpin()
	})
}

// Hazard 2: a blocking request never runs on a connection that holds a
// lock, so giving one up costs no lock. A connection holding a lock is
// kept out of the pool until the lock ends, and the next blocking request
// gets a clean connection.
func TestBlockingRequestsNeverRiskHeldLocks(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{MaxConns: 3, SharedConns: 1})
		other := e.pool(srv.Addr(), pool.Config{})
		b := grant(t, other, "b")

		pin, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		a, err := pin.Do(ctxFor(t, wait), tryLock("a"))
		require.NoError(t, err)
		require.NoError(t, a.Resp.Err())
		var aLost atomic.Bool
		a.Grant.OnLost(func(error) { aLost.Store(true) })
		owner := heldBy(srv, "a")
		_, err = pin.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "b", Timeout: 2})
		assert.ErrorIs(t, err, pool.ErrHoldsLocks)
		pin.Unpin()
		assert.Equal(t, 1, p.Stats().ParkedConns)

		// The next blocking request gets the other, clean, connection;
		// cancelling it returns at once and leaves a alone.
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := p.Do(ctx, &wire.Request{Cmd: wire.CmdLock, Key: "b", Timeout: 30})
			errc <- err
		}()
		synctest.Wait()
		require.Equal(t, 1, srv.Busy())
		cancel()
		synctest.Wait()
		select {
		case err := <-errc:
			assert.ErrorIs(t, err, context.Canceled)
		default:
			t.Fatal("cancel not honoured at once")
		}
		assert.Equal(t, owner, heldBy(srv, "a"), "the other lock is still held by the same connection")
		assert.False(t, aLost.Load())
		// The server keeps the wait; granted b, the draining connection gives
		// it back at once.
		require.NoError(t, b.Release(ctxFor(t, wait)))
		synctest.Wait()
		assert.Zero(t, p.Stats().DrainingConns)
		assert.Zero(t, heldBy(srv, "b"))

		// a's connection is out of puddle: both slots are free for waits.
		assert.Equal(t, 1, p.Stats().ParkedConns)
		p1, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		p2, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		// When a ends, its connection waits to be reused, but MaxConns still
		// bounds the waits in progress: no third Pin while two are pinned.
		require.NoError(t, a.Grant.Release(ctxFor(t, wait)))
		began := time.Now()
		_, err = p.Pin(ctxFor(t, 100*time.Millisecond))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 100*time.Millisecond, time.Since(began))
		// A lock granted on p1 takes its connection out of puddle; the slot
		// it frees gets a's connection back rather than a new one.
		c, err := p1.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "c", Timeout: 1})
		require.NoError(t, err)
		require.NoError(t, c.Resp.Err())
		p1.Unpin()
		dials := p.Stats().Dials
		again, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		assert.Same(t, a.Grant.Conn(), again.Conn())
		assert.Equal(t, dials, p.Stats().Dials, "reused, not dialled")
		again.Unpin()
		p2.Unpin()
		require.NoError(t, c.Grant.Release(ctxFor(t, wait)))
	})
}

// Pin honours its context, to the nanosecond, while every connection is
// pinned, and a lock held after a wait does not take a slot.
func TestPinHonoursContextWhenFull(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{MaxConns: 2, SharedConns: 1})
		res, err := p.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "a", Timeout: 1})
		require.NoError(t, err)
		require.NotNil(t, res.Grant)
		pn, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err, "the held lock keeps its own connection")
		defer pn.Unpin()
		start := time.Now()
		_, err = p.Pin(ctxFor(t, 200*time.Millisecond))
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 200*time.Millisecond, time.Since(start))
	})
}

// waiters is how many wait for key on srv.
func waiters(srv *fakeserver.Server, key string) int {
	for _, l := range srv.Stats().Locks {
		if l.Key == key {
			return l.Waiters
		}
	}
	return 0
}

// A wait given up by its caller stays queued on dflockd (the protocol
// cannot cancel it, and the server does not notice a closed connection
// while it waits). Its connection is kept until the answer: a lock
// granted then is released at once, not left to the server's disconnect
// clean-up, which with auto-release off takes a whole lease.
func TestGivenUpWaitDrainsAndGivesBackItsGrant(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{DisableAutoRelease: true})
		p := e.pool(srv.Addr(), pool.Config{})
		b := grant(t, p, "b")
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := p.Do(ctx, &wire.Request{Cmd: wire.CmdLock, Key: "b", Timeout: 30})
			errc <- err
		}()
		synctest.Wait()
		require.Equal(t, 1, waiters(srv, "b"))
		cancel()
		assert.ErrorIs(t, <-errc, context.Canceled)
		st := p.Stats()
		assert.Equal(t, 1, st.DrainingConns)
		assert.Zero(t, st.PinnedConns, "out of puddle: it takes no slot")

		require.NoError(t, b.Release(ctxFor(t, wait)))
		synctest.Wait()
		st = p.Stats()
		assert.Zero(t, st.DrainingConns)
		assert.Zero(t, heldBy(srv, "b"), "granted to the given-up wait, then released")
		assert.Zero(t, waiters(srv, "b"))
		assert.Equal(t, 1, st.IdleConns, "clean again: offered to the next Pin")
		assert.Zero(t, st.BrokenConns)
		pin, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		res, err := pin.Do(ctxFor(t, wait), tryLock("b"))
		require.NoError(t, err)
		require.NoError(t, res.Resp.Err(), "the key is free, and the connection in step")
		pin.Unpin()
		require.NoError(t, res.Grant.Release(ctxFor(t, wait)))
	})
}

// Given-up waits drain however many there are (closing one would free
// nothing on the server, which keeps the wait and counts the connection,
// and would leave a lock granted to it held by nobody when auto-release
// is off); one the server answers "timeout" frees its connection, and a
// grant to the others is given back at once.
func TestGivenUpWaitsAllDrain(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{DisableAutoRelease: true})
		p := e.pool(srv.Addr(), pool.Config{MaxConns: 2, SharedConns: 1})
		b := grant(t, p, "b")
		giveUp := func(timeout int) {
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			before := waiters(srv, "b")
			go func() {
				_, err := p.Do(ctx, &wire.Request{Cmd: wire.CmdLock, Key: "b", Timeout: timeout})
				errc <- err
			}()
			synctest.Wait()
			require.Equal(t, before+1, waiters(srv, "b"))
			cancel()
			require.ErrorIs(t, <-errc, context.Canceled)
		}
		giveUp(1)
		giveUp(30)
		giveUp(30)
		assert.Equal(t, 3, p.Stats().DrainingConns, "more than MaxConns drain")
		time.Sleep(time.Second - time.Nanosecond)
		synctest.Wait()
		assert.Equal(t, 3, p.Stats().DrainingConns)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.Equal(t, 2, p.Stats().DrainingConns, "the server answered the 1 s wait with timeout, on time")
		require.NoError(t, b.Release(ctxFor(t, wait)))
		synctest.Wait()
		assert.Zero(t, p.Stats().DrainingConns, "granted in turn to each given-up wait, and each time given back")
		assert.Zero(t, heldBy(srv, "b"))
		assert.Zero(t, p.Stats().BrokenConns)
	})
}

// A try-lock whose caller gave up (stalled server) is released when its
// grant finally arrives.
func TestAbandonedGrantIsReleased(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{})
		grant(t, p, "warm") // dial first, so only the stall delays the next reply
		srv.Stall(time.Minute)
		_, err := p.Do(ctxFor(t, 100*time.Millisecond), tryLock("k"))
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		_, err = p.Do(ctxFor(t, 100*time.Millisecond), &wire.Request{Cmd: wire.CmdEnqueue, Key: "q"})
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		srv.Unstall()
		synctest.Wait()
		assert.Zero(t, heldBy(srv, "k"))
		assert.Zero(t, p.Stats().InFlight)
		// The abandoned enqueue was consumed too: q is free, not held.
		assert.NotNil(t, grant(t, p, "q"))
		assert.NotNil(t, grant(t, p, "k"))
	})
}

// A stalled server never keeps a caller past its deadline, on shared or
// exclusive connections, nor when waiting for one: each gives up at its
// deadline exactly.
func TestStalledServerHonoursDeadlines(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{MaxConns: 4, SharedConns: 2})
		grant(t, p, "warm")
		srv.Stall(time.Minute)
		defer srv.Unstall()
		const deadline = 200 * time.Millisecond
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				req := tryLock("k")
				if i%2 == 1 {
					req = &wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: 10}
				}
				began := time.Now()
				_, err := p.Do(ctxFor(t, deadline), req)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Equal(t, deadline, time.Since(began), "request %d", i)
			})
		}
		wg.Wait()
	})
}

// A reply that does not fit its request discards the connection with an
// error naming the reply; the next request gets a fresh connection.
func TestMalformedReplyDiscardsConnection(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		ln := e.listen()
		defer ln.Close()
		var served sync.WaitGroup
		served.Go(func() {
			for n := 0; ; n++ {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				served.Go(func() {
					defer nc.Close()
					br := bufio.NewReader(nc)
					for {
						for range 3 {
							if _, err := br.ReadString('\n'); err != nil {
								return
							}
						}
						reply := "banana\n"
						if n > 0 {
							reply = "ok 0123456789abcdef0123456789abcdef 33\n"
						}
						if _, err := nc.Write([]byte(reply)); err != nil {
							return
						}
					}
				})
			}
		})
		p := e.pool(ln.Addr().String(), pool.Config{SharedConns: 1})
		_, err := p.Do(ctxFor(t, wait), tryLock("k"))
		require.ErrorIs(t, err, wire.ErrMalformedReply)
		assert.Contains(t, err.Error(), "banana")
		synctest.Wait()
		assert.Equal(t, uint64(1), p.Stats().BrokenConns)
		assert.Equal(t, uint64(1), p.Stats().MalformedReplies)
		res, err := p.Do(ctxFor(t, wait), tryLock("k"))
		require.NoError(t, err)
		assert.Equal(t, "0123456789abcdef0123456789abcdef", res.Resp.Token)
		p.Close()
		ln.Close()
		served.Wait()
	})
}

// A connection the server timed out while it held nothing is not broken,
// and the next request gets a fresh one.
func TestServerIdleCloseIsHarmless(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{ReadTimeout: 100 * time.Millisecond})
		// The pool believes the server waits 23 s: its connections outlive
		// the real 100 ms, and the server closes them.
		p := e.pool(srv.Addr(), pool.Config{SharedConns: 1})
		res, err := p.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdStats})
		require.NoError(t, err)
		require.NoError(t, res.Resp.Err())
		time.Sleep(100*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		assert.Equal(t, 1, p.Stats().Conns)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.Zero(t, p.Stats().Conns, "closed by the server's read timeout")
		assert.Zero(t, p.Stats().BrokenConns)
		grant(t, p, "k")
	})
}

// An exclusive connection idle for more than HealthCheckAfter is pinged
// before Pin hands it out; one idle for less, or exactly that, is not. A
// ping to a stalled server gives up with Pin's context.
func TestHealthCheckAfterIdle(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{MaxConns: 2, SharedConns: 1})
		pin := func(ctx context.Context) (pings uint64, err error) {
			before := p.Stats().Requests
			pn, err := p.Pin(ctx)
			if err == nil {
				pn.Unpin()
			}
			return p.Stats().Requests - before, err
		}
		n, err := pin(ctxFor(t, wait))
		require.NoError(t, err, "dialled")
		require.Zero(t, n)
		time.Sleep(time.Second)
		n, err = pin(ctxFor(t, wait))
		require.NoError(t, err)
		assert.Zero(t, n, "idle for HealthCheckAfter exactly: no ping")
		time.Sleep(time.Second + time.Nanosecond)
		n, err = pin(ctxFor(t, wait))
		require.NoError(t, err)
		assert.Equal(t, uint64(1), n, "pinged first")

		time.Sleep(2 * time.Second)
		srv.Stall(time.Minute)
		began := time.Now()
		_, err = pin(ctxFor(t, 100*time.Millisecond))
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 100*time.Millisecond, time.Since(began))
		srv.Unstall()
		synctest.Wait()
		st := p.Stats()
		assert.Zero(t, st.InFlight, "the ping was answered")
		assert.Equal(t, 1, st.IdleConns, "and its connection is back")
		assert.Zero(t, st.BrokenConns)
	})
}

// Connections that hold nothing are closed after IdleTimeout; one that
// holds a lock stays.
func TestIdleConnectionsClose(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		const idle = 100 * time.Millisecond
		p := e.pool(srv.Addr(), pool.Config{IdleTimeout: idle, KeepAlive: 50 * time.Millisecond})
		h := grant(t, p, "held")
		pin, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		pin.Unpin()
		require.Equal(t, 2, p.Stats().Conns)
		time.Sleep(idle - time.Nanosecond)
		synctest.Wait()
		require.Equal(t, 2, p.Stats().Conns, "not idle for IdleTimeout yet")
		// The pool looks every quarter of the shorter of KeepAlive and
		// IdleTimeout.
		time.Sleep(50*time.Millisecond/4 + time.Nanosecond)
		synctest.Wait()
		require.Equal(t, 1, p.Stats().Conns, "the idle exclusive connection closes")
		assert.Equal(t, map[uint64]int{h.Conn().ID(): 1}, p.Stats().GrantsPerConn, "the connection holding a lock stays")
		assert.NoError(t, h.Conn().Err())
		assert.Equal(t, 1, srv.Stats().Connections)
		assert.NotZero(t, heldBy(srv, "held"))
	})
}

func TestTLS(t *testing.T) {
	cert, roots := testcert.New(t)
	srv := startServer(t, fakeserver.Config{TLS: cert})
	p := newPool(t, srv.Addr(), pool.Config{TLS: roots})
	grant(t, p, "k")
	res, err := p.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "k2", Timeout: 1})
	require.NoError(t, err)
	require.NoError(t, res.Resp.Err())

	bad := newPool(t, srv.Addr(), pool.Config{TLS: &tls.Config{}})
	_, err = bad.Do(ctxFor(t, wait), tryLock("k3"))
	assert.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "certificate"), err.Error())
}

// TLS and auth apply on top of Config.Dial.
func TestTLSAndAuthOverTheDialHook(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		cert, roots := testcert.New(t)
		srv := e.server(fakeserver.Config{TLS: cert, AuthToken: "s3cret"})
		p := e.pool(srv.Addr(), pool.Config{TLS: roots, AuthToken: "s3cret"})
		grant(t, p, "k")

		bad := e.pool(srv.Addr(), pool.Config{TLS: roots, AuthToken: "wrong"})
		_, err := bad.Do(ctxFor(t, wait), tryLock("k2"))
		assert.ErrorIs(t, err, wire.ErrAuth)
	})
}

// Logs name the server and the connection, never a token, even when a
// malformed reply carries one.
func TestLogsHoldNoTokens(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		ln := e.listen()
		defer ln.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
			br := bufio.NewReader(nc)
			for i := range 6 {
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
				if i == 2 {
					nc.Write([]byte("ok aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 33\n"))
				}
			}
			nc.Write([]byte("ok bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb 0\n"))
		}()
		var logs testlog.Buffer
		p := e.pool(ln.Addr().String(), pool.Config{SharedConns: 1, Logger: logs.Logger()})
		res, err := p.Do(ctxFor(t, wait), tryLock("k"))
		require.NoError(t, err)
		_, err = p.Do(ctxFor(t, wait), tryLock("k2"))
		require.ErrorIs(t, err, wire.ErrMalformedReply)
		assert.Contains(t, err.Error(), "bbbb", "the caller's error names the reply")
		synctest.Wait()
		assert.Contains(t, logs.String(), "no longer holds what it granted")
		assert.NotContains(t, logs.String(), res.Resp.Token)
		assert.NotContains(t, logs.String(), "bbbb")
		p.Close()
		<-done
	})
}

// A caller's context is honoured while its request waits to be written:
// callers only queue, and the connection's writer alone waits for a peer
// that has stopped reading. On a busy machine this once took 1.14 s of
// real time for a 200 ms context; in a bubble it takes 200 ms exactly.
func TestContextHonouredAgainstAPeerThatStopsReading(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		ln := e.listen()
		defer ln.Close()
		accepted := make(chan net.Conn, 4)
		go func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- nc // never read from
			}
		}()
		defer func() {
			for len(accepted) > 0 {
				(<-accepted).Close()
			}
		}()
		p := e.pool(ln.Addr().String(), pool.Config{SharedConns: 1, WriteTimeout: 10 * time.Second})
		key := strings.Repeat("k", 200)
		reqs := make([]wire.Request, memnet.BufferSize/len(key)+1) // more than the connection buffers
		for i := range reqs {
			reqs[i] = wire.Request{Cmd: wire.CmdRelease, Key: key, Token: "0123456789abcdef0123456789abcdef"}
		}
		start := time.Now()
		_, errs := p.DoAll(ctxFor(t, 200*time.Millisecond), reqs)
		assert.ErrorIs(t, errs[0], context.DeadlineExceeded)
		assert.Equal(t, 200*time.Millisecond, time.Since(start))

		// A second caller on the same stuck connection is not held up either.
		start = time.Now()
		_, err := p.Do(ctxFor(t, 200*time.Millisecond), &keepAliveLike)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 200*time.Millisecond, time.Since(start))
	})
}

var keepAliveLike = wire.Request{Cmd: wire.CmdRelease, Key: "k", Token: "0123456789abcdef0123456789abcdef"}

// A connection kept by a lock held after a wait, once the lock is
// released, goes back to the pool, or is closed when enough idle ones
// wait already. Closed at once, it cut off the release in flight: the
// server released the lock with the connection, and Release reported it
// lost. Seen against dflockd 1.10 with 64 workers: 15% of two-phase
// releases.
func TestReleaseOnSurplusParkedConnectionIsAnswered(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{MaxConns: 2, SharedConns: 1}) // room for one idle in puddle, one freed
		var grants []*pool.Grant
		for i := range 6 {
			pin, err := p.Pin(ctxFor(t, wait))
			require.NoError(t, err)
			res, err := pin.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: fmt.Sprintf("k%d", i), Timeout: 1})
			require.NoError(t, err)
			require.NoError(t, res.Resp.Err())
			pin.Unpin()
			grants = append(grants, res.Grant)
		}
		require.Equal(t, 6, p.Stats().ParkedConns)
		for _, g := range grants {
			require.NoError(t, g.Release(ctxFor(t, wait)), "released, not lost")
		}
		synctest.Wait()
		st := p.Stats()
		assert.Zero(t, st.ParkedConns)
		// Up to two kept idle (one in puddle, one freed), the surplus
		// closed once answered. Sometimes one: puddle's constructor takes
		// a freed connection in the background, and a connection freed
		// before it has found the list full (1 run in about 250).
		assert.LessOrEqual(t, st.Conns, 2, "the surplus closed once answered: %+v", st)
		assert.Positive(t, st.Conns)
		assert.Equal(t, st.Conns, st.IdleConns, "all of them idle")
		assert.Zero(t, st.BrokenConns)
	})
}

// An enqueue given up before its answer still registers the key on its
// connection when the answer comes. The connection used to count as clean
// meanwhile, so the next Pin got it: a new enqueue there was refused as
// already enqueued, and a blocking lock waited behind the orphan, which
// the server then granted the lock.
func TestGivenUpEnqueueDoesNotLeakItsRegistration(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{MaxConns: 2, SharedConns: 1})
		grant(t, p, "k")

		pin, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		srv.Stall(wait)
		_, err = pin.Do(ctxFor(t, 50*time.Millisecond), &wire.Request{Cmd: wire.CmdEnqueue, Key: "k"})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		pin.Unpin()
		assert.Equal(t, 1, p.Stats().DrainingConns, "kept until the enqueue is answered and withdrawn")
		srv.Unstall()
		synctest.Wait()
		st := p.Stats()
		assert.Zero(t, st.DrainingConns)
		assert.Equal(t, 1, st.IdleConns)
		assert.Zero(t, waiters(srv, "k"), "the orphan's place was given up")

		pin, err = p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		defer pin.Unpin()
		res, err := pin.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdEnqueue, Key: "k"})
		require.NoError(t, err)
		assert.Equal(t, wire.StatusQueued, res.Resp.Status, "not error_already_enqueued")
		require.NoError(t, pin.Withdraw(ctxFor(t, wait), "k", false))
	})
}

// A release still in flight on a connection that the next Pin took, for a
// wait then given up: the connection drains, and the release is answered
// (it used to be cut off once enough connections drained, and Release
// reported the lock lost).
func TestReleaseInFlightOnAConnectionWhoseNextWaitIsGivenUp(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{MaxConns: 2, SharedConns: 1})
		grant(t, p, "busy")
		pin, err := p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		res, err := pin.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "a", Timeout: 1})
		require.NoError(t, err)
		require.NoError(t, res.Resp.Err())
		pin.Unpin()

		srv.Stall(wait)
		released := make(chan error, 1)
		go func() { released <- res.Grant.Release(ctxFor(t, wait)) }()
		synctest.Wait()
		require.Equal(t, 1, p.Stats().IdleConns, "offered to the next Pin, release pending")
		pin, err = p.Pin(ctxFor(t, wait))
		require.NoError(t, err)
		require.Same(t, res.Grant.Conn(), pin.Conn())
		_, err = pin.Do(ctxFor(t, 20*time.Millisecond), &wire.Request{Cmd: wire.CmdLock, Key: "busy", Timeout: 1})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		pin.Unpin()
		srv.Unstall()
		require.NoError(t, <-released)
		// The given-up wait is handled now, and times out a second later:
		// only then is the connection clean.
		time.Sleep(time.Second - time.Nanosecond)
		synctest.Wait()
		assert.Equal(t, 1, p.Stats().DrainingConns)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.Zero(t, p.Stats().DrainingConns)
	})
}
