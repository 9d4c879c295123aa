package pool

import (
	"context"
	"errors"
	"time"

	"github.com/dflock-go/dflock/wire"
)

// Call is a request sent on a shared connection by Send, whose reply is
// taken later by Await. Requests to many servers go out this way at once
// and are awaited in turn, or as they come (Notify), with no goroutine
// each. Every Call must be awaited, once (through one copy: a Call is a
// handle on the request in flight): until then a lock its reply grants
// is held for nobody. A second Await returns an error.
type Call struct {
	p       *Pool
	c       *Conn
	cl      *call
	err     error        // why it was not sent
	req     wire.Request // sent again if the server refused the connection
	attempt int
}

// Send queues req on one of the shared connections and returns at once,
// as Do would before it waits. ctx bounds the dialling of a connection, if
// one must be; once it has ended, nothing is sent. A blocking request, and
// stats, are refused (they need an exclusive connection: see Do); so is an
// invalid one. The error, if any, comes from Await.
func (p *Pool) Send(ctx context.Context, req *wire.Request) Call {
	cl := Call{p: p, req: *req}
	switch err := req.Validate(); {
	case err != nil:
		cl.err = err
	case needsCleanConn(req):
		cl.err = notPipelined("Send", req)
	default:
		cl.send(ctx)
	}
	return cl
}

// send puts the call's request on a shared connection, trying another
// while the one picked broke before it was queued.
func (cl *Call) send(ctx context.Context) {
	if err := ctx.Err(); err != nil {
		cl.err = err // as Do: nothing sent for a caller gone
		return
	}
	for {
		cl.attempt++
		c, err := cl.p.sharedConn(ctx)
		if err != nil {
			cl.c, cl.cl, cl.err = nil, nil, err
			return
		}
		cl.c = c
		cl.cl, cl.err = c.send(&cl.req, false)
		if cl.err == nil || !errors.Is(cl.err, errNotSent) || cl.attempt >= 3 {
			return
		}
	}
}

// Notify has ch hear tag once the reply is in (or the request failed), so
// that a caller waits for many calls on one channel. ch must have room
// for every tag that may come: the pool never blocks on it. Call it once,
// before Await.
func (cl *Call) Notify(ch chan<- int, tag int) {
	if cl.cl == nil {
		notify(ch, tag) // failed already
		return
	}
	c := cl.c
	c.mu.Lock()
	if len(cl.cl.done) > 0 {
		notify(ch, tag)
	} else {
		cl.cl.notify, cl.cl.tag = ch, tag
	}
	c.mu.Unlock()
}

// Arriving reports whether the call's answer may be held up in this
// process rather than by the server: the request is not written yet, or
// the connection has received bytes its reader has not handled. A
// deadline that passes while it is true is not the server's silence.
func (cl *Call) Arriving() bool {
	return cl.cl != nil && cl.c.arriving(cl.cl)
}

// Wait waits for the reply without taking it: nil once it is in, or
// ctx's error, or one matching ErrNoReply at deadline (unless zero). The
// call stays out either way, to be awaited.
func (cl *Call) Wait(ctx context.Context, deadline time.Time) error {
	if cl.cl == nil {
		return nil
	}
	return cl.c.waitBy(ctx, cl.cl, deadline)
}

// Await waits for the reply, and returns it as Do would. If ctx ends or
// deadline (unless zero) passes first, the call is abandoned, as with
// DoBy: a lock its reply grants is released when it comes.
func (cl *Call) Await(ctx context.Context, deadline time.Time) (Result, error) {
	for {
		if cl.cl == nil {
			return Result{}, cl.err
		}
		res, _, err := cl.c.awaitBy(ctx, cl.cl, deadline)
		cl.cl, cl.err = nil, errAwaited
		if !errors.Is(err, ErrRefused) || cl.attempt >= 3 {
			return res, err
		}
		// The server closed the connection unread at once (its
		// connection limit): nothing was done, so another may carry it.
		cl.send(ctx)
	}
}

// errAwaited is what a Call awaited twice says the second time.
var errAwaited = errors.New("pool: call awaited already")

// notify sends tag on ch if there is room, as Notify promised there is.
func notify(ch chan<- int, tag int) {
	select {
	case ch <- tag:
	default:
	}
}
