package pool_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// Requests sent with Send go out at once and are answered in any order
// of Await; Notify tells which are in, a stalled server's last.
func TestSendNotifyAwait(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		fast := e.server(fakeserver.Config{})
		slow := e.server(fakeserver.Config{})
		pf, ps := e.pool(fast.Addr(), pool.Config{}), e.pool(slow.Addr(), pool.Config{})
		grant(t, ps, "warm")
		slow.Stall(time.Second)
		ctx := ctxFor(t, wait)
		calls := []pool.Call{ps.Send(ctx, tryLock("k")), pf.Send(ctx, tryLock("k"))}
		in := make(chan int, len(calls))
		for j := range calls {
			calls[j].Notify(in, j)
		}
		start := time.Now()
		assert.Equal(t, 1, <-in, "the answering server first")
		assert.Zero(t, time.Since(start))
		res, err := calls[1].Await(ctx, time.Time{})
		require.NoError(t, err)
		require.NotNil(t, res.Grant)
		assert.Equal(t, fast.Addr(), res.Grant.Addr())
		_, err = calls[1].Await(ctx, time.Time{})
		assert.Error(t, err, "awaited twice")
		assert.Equal(t, 0, <-in)
		assert.Equal(t, time.Second, time.Since(start), "the stalled one when it answers")
		res, err = calls[0].Await(ctx, time.Time{})
		require.NoError(t, err)
		require.NotNil(t, res.Grant)
		assert.Equal(t, slow.Addr(), res.Grant.Addr())
	})
}

// Wait waits without taking the reply, and without giving up the
// request: a grant that comes after its deadline is still the caller's.
// Await at the deadline gives it up: the grant goes back.
func TestCallWaitKeepsTheRequest(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{})
		grant(t, p, "warm")
		srv.Stall(time.Second)
		ctx := ctxFor(t, wait)
		kept, dropped := p.Send(ctx, tryLock("kept")), p.Send(ctx, tryLock("dropped"))
		by := time.Now().Add(100 * time.Millisecond)
		assert.ErrorIs(t, kept.Wait(ctx, by), pool.ErrNoReply)
		_, err := dropped.Await(ctx, by)
		assert.ErrorIs(t, err, pool.ErrNoReply)
		assert.NoError(t, kept.Wait(ctx, time.Time{}))
		res, err := kept.Await(ctx, by) // in already: the deadline passed is moot
		require.NoError(t, err)
		require.NotNil(t, res.Grant)
		synctest.Wait()
		assert.NotZero(t, heldBy(srv, "kept"))
		assert.Zero(t, heldBy(srv, "dropped"), "the late grant went back")
		// ctx ends the wait the same way.
		srv.Stall(time.Second)
		c := p.Send(ctx, tryLock("late"))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		assert.ErrorIs(t, c.Wait(cctx, time.Time{}), context.Canceled)
		res, err = c.Await(ctx, time.Time{})
		require.NoError(t, err)
		assert.NotNil(t, res.Grant)
	})
}

// Send refuses what Do would not pipeline, and an invalid request, before
// sending, and sends nothing once ctx has ended; the error comes from
// Await, and Notify tells at once.
func TestSendRefuses(t *testing.T) {
	srv := startServer(t, fakeserver.Config{})
	p := newPool(t, srv.Addr(), pool.Config{})
	ctx := ctxFor(t, wait)
	for _, req := range []*wire.Request{
		{Cmd: wire.CmdLock, Key: "k", Timeout: 5},
		{Cmd: wire.CmdStats},
		{Cmd: wire.CmdLock, Key: "bad key"},
	} {
		c := p.Send(ctx, req)
		in := make(chan int, 1)
		c.Notify(in, 7)
		assert.Equal(t, 7, <-in)
		_, err := c.Await(ctx, time.Time{})
		assert.ErrorIs(t, err, wire.ErrInvalidRequest, "%+v", req)
	}
	// A caller gone already sends nothing, as with Do.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	c := p.Send(cctx, tryLock("k"))
	_, err := c.Await(ctx, time.Time{})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, p.Stats().Requests)
	assert.Zero(t, heldBy(srv, "k"))
}

// StartRelease sends a release and Await takes its answer, as Release
// does: nil when the server held it, ErrGrantLost when it had let it go,
// ErrNotHeld the second time (nothing sent).
func TestStartRelease(t *testing.T) {
	srv := startServer(t, fakeserver.Config{})
	p := newPool(t, srv.Addr(), pool.Config{})
	ctx := ctxFor(t, wait)
	a, b := grant(t, p, "a"), grant(t, p, "b")
	require.Equal(t, 1, srv.ExpireNow("b"))
	ra, rb := a.StartRelease(), b.StartRelease()
	in := make(chan int, 2)
	ra.Notify(in, 0)
	rb.Notify(in, 1)
	got := map[int]bool{<-in: true, <-in: true}
	assert.Len(t, got, 2)
	assert.NoError(t, ra.Wait(ctx, time.Time{}))
	assert.NoError(t, ra.Await(ctx, time.Time{}))
	assert.ErrorIs(t, rb.Await(ctx, time.Time{}), pool.ErrGrantLost)
	assert.ErrorIs(t, ra.Await(ctx, time.Time{}), pool.ErrNotHeld, "awaited twice")
	assert.Zero(t, heldBy(srv, "a"))
	before := p.Stats().Requests
	again := a.StartRelease()
	assert.ErrorIs(t, again.Await(ctx, time.Time{}), pool.ErrNotHeld)
	assert.Equal(t, before, p.Stats().Requests)
}

// lossCount is a LossListener that counts what it hears.
type lossCount struct {
	grants []*pool.Grant
	errs   []error
}

func (lc *lossCount) GrantLost(g *pool.Grant, err error) {
	lc.grants, lc.errs = append(lc.grants, g), append(lc.errs, err)
}

// A listener hears each grant it listens to lost, once, with the grant;
// one lost already hears at once; a released one never.
func TestListen(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		p := e.pool(srv.Addr(), pool.Config{})
		a, b, c := grant(t, p, "a"), grant(t, p, "b"), grant(t, p, "c")
		var lc lossCount
		a.Listen(&lc)
		b.Listen(&lc)
		c.Listen(&lc)
		require.NoError(t, c.Release(ctxFor(t, wait)))
		a.Drop(errors.New("test"))
		assert.Equal(t, []*pool.Grant{a}, lc.grants)
		srv.DropConnections()
		synctest.Wait()
		assert.Equal(t, []*pool.Grant{a, b}, lc.grants)
		for _, err := range lc.errs {
			assert.ErrorIs(t, err, pool.ErrGrantLost)
		}
		b.Listen(&lc) // lost already: at once
		assert.Len(t, lc.grants, 3)
	})
}

// A pool that lost locks with a connection (a server killed) tries the
// server every 50 ms, whatever its dial backoff, and calls OnReturn as
// soon as a connection answers again: once per return.
func TestOnReturnAfterARestart(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		srv := e.server(fakeserver.Config{})
		var back atomic.Int32
		var at time.Time
		p := e.pool(srv.Addr(), pool.Config{OnReturn: func() { back.Add(1); at = time.Now() }})
		grant(t, p, "k")
		require.NoError(t, srv.Stop())
		time.Sleep(3 * time.Second) // down long enough for the dial backoff to reach its cap
		require.NoError(t, srv.Restart())
		restarted := time.Now()
		time.Sleep(time.Second)
		synctest.Wait()
		require.Equal(t, int32(1), back.Load(), "called once")
		assert.LessOrEqual(t, at.Sub(restarted), 50*time.Millisecond)
		// A connection that broke holding nothing is not a loss to take
		// back: no call.
		srv.DropConnections()
		time.Sleep(time.Second)
		grant(t, p, "k2")
		synctest.Wait()
		assert.Equal(t, int32(1), back.Load())
	})
}
