package pool_test

import (
	"cmp"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/memnet"
	"github.com/dflock-go/dflock/internal/testlog"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const wait = 5 * time.Second

// startServer runs a server on loopback TCP for one test.
func startServer(t *testing.T, cfg fakeserver.Config) *fakeserver.Server {
	t.Helper()
	srv, err := fakeserver.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return srv
}

func newPool(t *testing.T, addr string, cfg pool.Config) *pool.Pool {
	t.Helper()
	p, err := pool.New(addr, cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// env is a bubble's in-memory network, where its servers and pools meet.
//
// Every test whose outcome depends on time (a stall, a deadline, a lease,
// the server's read timeout, the pool's keep-alives, idle closes and dial
// backoff) runs in a synctest bubble (see inBubble): its clock is
// virtual, so a busy machine cannot move a deadline, a 60 s scenario
// takes milliseconds, durations can be asserted exactly, and
// synctest.Wait says when every goroutine (pool, server, test) has done
// all it can until the clock moves, where real time needed polling. The
// other tests dial loopback TCP, so that TCP keeps its coverage.
type env struct {
	t  *testing.T
	nw *memnet.Network
}

// inBubble runs f in a synctest bubble with a fresh in-memory network.
func inBubble(t *testing.T, f func(t *testing.T, e *env)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) { f(t, &env{t: t, nw: memnet.New()}) })
}

// server runs a server on the bubble's network for the test.
func (e *env) server(cfg fakeserver.Config) *fakeserver.Server {
	e.t.Helper()
	cfg.Listen = e.nw.Listen
	return startServer(e.t, cfg)
}

// pool returns a pool that dials the bubble's network, closed at the end.
func (e *env) pool(addr string, cfg pool.Config) *pool.Pool {
	e.t.Helper()
	cfg.Dial = e.nw.Dial
	return newPool(e.t, addr, cfg)
}

// listen listens on the bubble's network, for a scripted peer.
func (e *env) listen() net.Listener {
	e.t.Helper()
	ln, err := e.nw.Listen("tcp", "127.0.0.1:0")
	require.NoError(e.t, err)
	return ln
}

// dial connects a raw client to addr on the bubble's network.
func (e *env) dial(addr string) net.Conn {
	e.t.Helper()
	nc, err := e.nw.Dial(e.t.Context(), "tcp", addr)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { nc.Close() })
	return nc
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func tryLock(key string) *wire.Request {
	return &wire.Request{Cmd: wire.CmdLock, Key: key, Timeout: 0}
}

// grant takes key with a try-lock and returns its grant.
func grant(t *testing.T, p *pool.Pool, key string) *pool.Grant {
	t.Helper()
	res, err := p.Do(ctxFor(t, wait), tryLock(key))
	require.NoError(t, err)
	require.NoError(t, res.Resp.Err())
	require.NotNil(t, res.Grant)
	require.Equal(t, res.Resp.Token, res.Grant.Token())
	return res.Grant
}

func heldBy(srv *fakeserver.Server, key string) uint64 {
	for _, l := range srv.Stats().Locks {
		if l.Key == key {
			return l.OwnerConnID
		}
	}
	return 0
}

func TestDoAndGrant(t *testing.T) {
	srv := startServer(t, fakeserver.Config{})
	p := newPool(t, srv.Addr(), pool.Config{})
	g := grant(t, p, "k")
	tok := g.Token()
	assert.Len(t, tok, 32)
	assert.NotZero(t, heldBy(srv, "k"))
	st := p.Stats()
	assert.Equal(t, 1, st.Grants)
	assert.Equal(t, map[uint64]int{g.Conn().ID(): 1}, st.GrantsPerConn)
	assert.Equal(t, 1, g.Conn().Grants())
	assert.NoError(t, g.Err())
	assert.False(t, g.Deadline().IsZero(), "see TestGrantDeadline")

	require.NoError(t, g.Release(ctxFor(t, wait)))
	assert.ErrorIs(t, g.Release(ctxFor(t, wait)), pool.ErrNotHeld, "twice is safe")
	assert.ErrorIs(t, g.Err(), pool.ErrNotHeld)
	assert.True(t, g.Deadline().IsZero())
	assert.Zero(t, p.Stats().Grants)
	assert.Zero(t, heldBy(srv, "k"))

	res, err := p.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdRelease, Key: "k", Token: tok})
	require.NoError(t, err)
	assert.ErrorIs(t, res.Resp.Err(), wire.ErrServer, "server failures are replies, not pool errors")
}

// A grant's deadline is the earlier of the end of its lease and the
// server's read timeout on its connection, each less a margin; the
// keep-alives move the second.
func TestGrantDeadline(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{SharedConns: 1})
		start := time.Now()
		g := grant(t, p, "k") // the default lease, 33 s
		assert.Equal(t, start.Add(22*time.Second), g.Deadline(), "the read timeout, 23 s, less a second")
		res, err := p.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "short", Lease: 5})
		require.NoError(t, err)
		assert.Equal(t, start.Add(5*time.Second-250*time.Millisecond), res.Grant.Deadline(), "the lease, less a twentieth")
		require.NoError(t, res.Grant.Release(ctxFor(t, wait)))

		// Quiet for KeepAlive (10 s), the connection carries a keep-alive,
		// and the server's read timeout starts again from it.
		time.Sleep(11 * time.Second)
		assert.Equal(t, start.Add(32*time.Second), g.Deadline())
	})
}

func TestInvalidRequestIsRefusedBeforeDialling(t *testing.T) {
	p := newPool(t, "127.0.0.1:1", pool.Config{})
	_, err := p.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "bad key"})
	assert.ErrorIs(t, err, wire.ErrInvalidRequest)
	assert.Zero(t, p.Stats().Dials)
}

// TestPipelining: many callers share the shared connections; their
// requests and replies stay matched.
func TestPipelining(t *testing.T) {
	srv := startServer(t, fakeserver.Config{MaxLocks: -1})
	p := newPool(t, srv.Addr(), pool.Config{SharedConns: 2})
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				key := "k-" + string(rune('a'+g%26)) + "-" + time.Duration(g*1000+i).String()
				res, err := p.Do(context.Background(), tryLock(key))
				if !assert.NoError(t, err) || !assert.NoError(t, res.Resp.Err()) {
					return
				}
				if !assert.NoError(t, res.Grant.Release(context.Background()), "release of %s", key) {
					return
				}
			}
		}()
	}
	wg.Wait()
	st := p.Stats()
	assert.Equal(t, 2, st.SharedConns)
	assert.Equal(t, 2, st.Conns, "no exclusive connection was needed")
	assert.Zero(t, st.InFlight)
	assert.Zero(t, st.Grants)
	assert.Equal(t, 2, srv.Stats().Connections)
}

func TestBlockingRequestsUseExclusiveConnections(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{})
		holder := grant(t, p, "k")

		got := make(chan pool.Result, 1)
		go func() {
			res, err := p.Do(ctxFor(t, wait), &wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: 5})
			assert.NoError(t, err)
			got <- res
		}()
		synctest.Wait()
		require.Equal(t, 1, waiters(srv, "k"))
		// The shared connections stay free while the blocking request waits.
		other := grant(t, p, "other")
		require.NoError(t, holder.Release(ctxFor(t, wait)))
		res := <-got
		require.NoError(t, res.Resp.Err())
		require.NotNil(t, res.Grant)
		assert.NotSame(t, other.Conn(), res.Grant.Conn())
		assert.NotSame(t, holder.Conn(), res.Grant.Conn())
		st := p.Stats()
		assert.Equal(t, 1, st.ParkedConns, "kept out of the pool by its lock")
		assert.Zero(t, st.PinnedConns+st.IdleConns)
		require.NoError(t, res.Grant.Release(ctxFor(t, wait)))
		st = p.Stats()
		assert.Equal(t, 1, st.IdleConns, "clean again, back in the pool")
		assert.Zero(t, st.ParkedConns)
	})
}

func TestAuth(t *testing.T) {
	srv := startServer(t, fakeserver.Config{AuthToken: "s3cret"})
	var logs testlog.Buffer
	good := newPool(t, srv.Addr(), pool.Config{AuthToken: "s3cret", Logger: logs.Logger()})
	grant(t, good, "k")

	bad := newPool(t, srv.Addr(), pool.Config{AuthToken: "wrong", Logger: logs.Logger()})
	_, err := bad.Do(ctxFor(t, wait), tryLock("k2"))
	assert.ErrorIs(t, err, wire.ErrAuth)
	assert.Equal(t, uint64(1), bad.Stats().DialErrors)
	assert.NotContains(t, logs.String(), "s3cret")
	assert.NotContains(t, logs.String(), "wrong")
}

// A server that needs a token, asked without one, answers the first
// request "error_auth" and closes: every call says ErrAuth, the first
// and those after it (pipelined behind it, or on the next connection),
// never "connection reset".
func TestNoTokenIsErrAuthEveryTime(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{AuthToken: "s3cret"})
		p := e.pool(srv.Addr(), pool.Config{SharedConns: 1})
		reqs := []wire.Request{*tryLock("a"), *tryLock("b"), *tryLock("c")}
		res, errs := p.DoAll(ctxFor(t, wait), reqs)
		for i, err := range errs {
			assert.ErrorIs(t, cmp.Or(err, res[i].Resp.Err()), wire.ErrAuth, "pipelined request %d", i)
		}
		for i := range 3 {
			r, err := p.Do(ctxFor(t, wait), tryLock("k"))
			assert.ErrorIs(t, cmp.Or(err, r.Resp.Err()), wire.ErrAuth, "call %d after", i)
		}
	})
}

func TestConfig(t *testing.T) {
	for name, cfg := range map[string]pool.Config{
		"one connection":     {MaxConns: 1},
		"all shared":         {MaxConns: 4, SharedConns: 4},
		"negative keepalive": {KeepAlive: -time.Second},
		"keepalive too slow": {ServerReadTimeout: 2 * time.Second, KeepAlive: 3 * time.Second},
		"idle too long":      {ServerReadTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second},
	} {
		_, err := pool.New("127.0.0.1:1", cfg)
		assert.Error(t, err, name)
	}
	_, err := pool.New("no-port", pool.Config{})
	assert.Error(t, err)
}

func TestCloseReleasesEverything(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p, err := pool.New(srv.Addr(), pool.Config{Dial: e.nw.Dial})
		require.NoError(t, err)
		g := grant(t, p, "k")
		lost := make(chan error, 1)
		g.OnLost(func(err error) { lost <- err })
		p.Close()
		p.Close()
		select {
		case err := <-lost:
			assert.ErrorIs(t, err, pool.ErrBroken)
			assert.ErrorIs(t, err, pool.ErrGrantLost)
		default:
			t.Fatal("holder not told before Close returned")
		}
		synctest.Wait()
		assert.Zero(t, srv.Stats().Connections)
		assert.Empty(t, srv.Stats().Locks)
		_, err = p.Do(ctxFor(t, wait), tryLock("k"))
		assert.ErrorIs(t, err, pool.ErrClosed)
		_, err = p.Pin(ctxFor(t, wait))
		assert.ErrorIs(t, err, pool.ErrClosed)
		assert.True(t, strings.Contains(err.Error(), "closed"))
	})
}

func TestDoAll(t *testing.T) {
	srv := startServer(t, fakeserver.Config{})
	p := newPool(t, srv.Addr(), pool.Config{})
	ga := grant(t, p, "a")
	tokA := ga.Token()
	gb := grant(t, p, "b")
	results, errs := p.DoAll(ctxFor(t, wait), []wire.Request{
		{Cmd: wire.CmdRenew, Key: "a", Token: tokA, Lease: 7},
		{Cmd: wire.CmdRenew, Key: "b", Token: "ffffffffffffffffffffffffffffffff"},
		{Cmd: wire.CmdRenew, Key: "bad key", Token: tokA},
		{Cmd: wire.CmdLock, Key: "c"},
	})
	require.NoError(t, errs[0])
	assert.Equal(t, 7, results[0].Resp.Lease)
	require.NoError(t, errs[1])
	assert.ErrorIs(t, results[1].Resp.Err(), wire.ErrServer)
	assert.ErrorIs(t, errs[2], wire.ErrInvalidRequest)
	require.NoError(t, errs[3])
	assert.NotNil(t, results[3].Grant)
	require.NoError(t, ga.Release(ctxFor(t, wait)))
	require.NoError(t, gb.Release(ctxFor(t, wait)))

	_, errs = p.DoAll(ctxFor(t, wait), []wire.Request{{Cmd: wire.CmdLock, Key: "d", Timeout: 5}})
	assert.ErrorIs(t, errs[0], wire.ErrInvalidRequest, "blocking requests are refused")
}

// Renew applies each answer to the grant it was sent for: a refusal loses
// that grant and nothing else, and an answer about a grant released
// meanwhile belongs to nothing.
func TestRenew(t *testing.T) {
	srv := startServer(t, fakeserver.Config{})
	p := newPool(t, srv.Addr(), pool.Config{})
	a := grant(t, p, "a")
	b := grant(t, p, "b")
	srv.ExpireNow("b")
	old := grant(t, p, "c")
	require.NoError(t, old.Release(ctxFor(t, wait)))
	c := grant(t, p, "c") // the same key again: a new grant

	var bLost, cLost atomic.Bool
	b.OnLost(func(err error) { bLost.Store(errors.Is(err, pool.ErrGrantLost)) })
	c.OnLost(func(error) { cLost.Store(true) })
	before, _ := a.Lease()
	errs := p.Renew(ctxFor(t, wait), []pool.Renewal{{Grant: a, Lease: 7}, {Grant: b, Lease: 7}, {Grant: old, Lease: 7}})
	require.NoError(t, errs[0])
	since, lease := a.Lease()
	assert.Equal(t, 7*time.Second, lease)
	assert.True(t, since.After(before))
	assert.ErrorIs(t, errs[1], pool.ErrGrantLost)
	assert.True(t, bLost.Load(), "b's callback ran before Renew returned")
	assert.ErrorIs(t, b.Err(), pool.ErrGrantLost)
	assert.ErrorIs(t, errs[2], pool.ErrNotHeld)
	assert.False(t, cLost.Load(), "the refusal for the old token never touches the new grant")
	assert.NoError(t, c.Err())
	assert.Equal(t, 2, p.Stats().Grants)
}

// DoBy gives up on a stalled server at its deadline, to the nanosecond;
// the lock the request is granted once the server wakes is released at
// once.
func TestDoByGivesUpAtItsDeadline(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{})
		grant(t, p, "warm") // connected
		srv.Stall(time.Minute)
		start := time.Now()
		_, err := p.DoBy(ctxFor(t, wait), tryLock("k"), start.Add(100*time.Millisecond))
		assert.ErrorIs(t, err, pool.ErrNoReply)
		assert.Contains(t, err.Error(), srv.Addr())
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
		srv.Unstall()
		synctest.Wait()
		assert.Zero(t, heldBy(srv, "k"), "the late grant went back")
		assert.Zero(t, p.Stats().InFlight)
		// A zero deadline waits as Do does.
		res, err := p.DoBy(ctxFor(t, wait), tryLock("k2"), time.Time{})
		require.NoError(t, err)
		require.NotNil(t, res.Grant)
	})
}

// DoAllBy gives up on every reply at its deadline; the locks granted
// later go back at once. An invalid request is refused alone.
func TestDoAllByGivesUpAtItsDeadline(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{})
		grant(t, p, "warm")
		srv.Stall(time.Minute)
		reqs := []wire.Request{*tryLock("a"), *tryLock("b"), {Cmd: wire.CmdLock, Key: "bad key"}}
		start := time.Now()
		_, errs := p.DoAllBy(ctxFor(t, wait), reqs, start.Add(100*time.Millisecond))
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
		assert.ErrorIs(t, errs[0], pool.ErrNoReply)
		assert.ErrorIs(t, errs[1], pool.ErrNoReply)
		assert.ErrorIs(t, errs[2], wire.ErrInvalidRequest)
		srv.Unstall()
		synctest.Wait()
		for _, k := range []string{"a", "b"} {
			assert.Zero(t, heldBy(srv, k), "the late grant of %s went back", k)
		}
	})
}

// ReleaseEach releases grants of several connections, one write each,
// and says which were not held or lost.
func TestReleaseEach(t *testing.T) {
	srv := startServer(t, fakeserver.Config{})
	p := newPool(t, srv.Addr(), pool.Config{})
	other := startServer(t, fakeserver.Config{})
	q := newPool(t, other.Addr(), pool.Config{})
	gs := []*pool.Grant{grant(t, p, "a"), grant(t, q, "b"), grant(t, p, "c"), grant(t, p, "d"), grant(t, q, "e")}
	require.NoError(t, gs[2].Release(ctxFor(t, wait))) // released already
	require.Equal(t, 1, srv.ExpireNow("d"))            // lost on the server
	before := p.Stats().Requests
	errs := pool.ReleaseEach(ctxFor(t, wait), gs)
	assert.NoError(t, errs[0])
	assert.NoError(t, errs[1])
	assert.ErrorIs(t, errs[2], pool.ErrNotHeld)
	assert.ErrorIs(t, errs[3], pool.ErrGrantLost)
	assert.NoError(t, errs[4])
	assert.Equal(t, uint64(2), p.Stats().Requests-before, "a and d: c was not sent")
	for _, k := range []string{"a", "c", "d"} {
		assert.Zero(t, heldBy(srv, k))
	}
	assert.Zero(t, heldBy(other, "b"))
	assert.Zero(t, heldBy(other, "e"))
}

// TryPin never waits for a connection to be freed: with room it dials
// one; with every connection pinned it says so at once.
func TestTryPin(t *testing.T) {
	srv := startServer(t, fakeserver.Config{})
	// One exclusive connection.
	p := newPool(t, srv.Addr(), pool.Config{MaxConns: 2, SharedConns: 1})
	pn, err := p.TryPin(ctxFor(t, wait))
	require.NoError(t, err, "dialled")
	_, err = p.TryPin(ctxFor(t, wait))
	assert.ErrorIs(t, err, pool.ErrNoFreeConn)
	pn.Unpin()
	pn, err = p.TryPin(ctxFor(t, wait))
	require.NoError(t, err, "the idle one")
	pn.Unpin()

	// A server that cannot be reached: the dial's error.
	srv.Close()
	q := newPool(t, srv.Addr(), pool.Config{})
	_, err = q.TryPin(ctxFor(t, wait))
	assert.Error(t, err)
	assert.NotErrorIs(t, err, pool.ErrNoFreeConn)
}
