package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/puddle/v2"

	"github.com/dflock-go/dflock/wire"
)

// Conn is one connection to a server. Requests from any number of
// goroutines are pipelined on it: queued by the callers, written by the
// connection's writer goroutine, answered in order to its reader
// goroutine. Locks granted through it belong to it on the server; each is
// a Grant, which the connection reports lost if it breaks.
type Conn struct {
	p      *Pool
	id     uint64
	nc     net.Conn
	in     *watchedReader // nc as lr reads it
	lr     *wire.LineReader
	shared bool          // carries pipelined requests of many callers
	wake   chan struct{} // tells the writer that wbuf has requests; capacity 1
	quit   chan struct{} // closed when the connection breaks

	// mu guards every field below, and the mutable fields of the
	// connection's Grants. Lock order: Pool.mu before Conn.mu; Conn.mu is
	// never held while calling into puddle, writing to the socket, or
	// running a callback.
	mu     sync.Mutex
	wbuf   []byte // requests queued and not yet written
	wcount int    // requests in wbuf
	// queued and written count the requests queued and written so far;
	// the last write carried those from lastBatch on, and ended at
	// lastWrite (see arriving).
	queued, written, lastBatch uint64
	lastWrite                  time.Time
	spare                      []byte // the writer's other buffer
	pending                    []*call
	head                       int               // pending[head:] await replies
	grants                     map[string]*Grant // live grants, by token
	regs                       map[string]bool   // keys with an enqueue registered and no wait yet
	broken                     error
	lastSent                   time.Time // when a request was last queued
	// heard is when the latest request the server has answered was
	// queued. The server wrote that reply after reading the request, and
	// its read-timeout clock restarts no earlier than its last reply, so
	// it cannot time the connection out before heard + its read timeout.
	heard time.Time
	// answered: the server has answered a request on this connection,
	// so it did not refuse it.
	answered bool
	// authRefused: the server answered error_auth here, and closes.
	authRefused bool
	dialed      time.Time // when the connection was set up
	// draining: kept out of puddle for the answer to an abandoned
	// blocking request, enqueue or wait.
	draining bool
	// retiring: to be closed once every request queued on it has its
	// answer (see retire).
	retiring bool
	owner    owner                   // who holds res
	res      *puddle.Resource[*Conn] // exclusive connections: our puddle slot
}

// owner says who decides an exclusive connection's return to puddle.
type owner int

const (
	ownerPuddle owner = iota // idle in puddle or in Pool.freed (or a shared connection)
	ownerPinner              // pinned by a caller
	ownerKept                // out of puddle, kept by its grants or by an abandoned wait
	ownerNone                // closed, or being closed
)

// ErrBroken wraps the reason a connection stopped working.
var ErrBroken = errors.New("pool: connection broken")

// ErrRefused: the server closed a new connection before answering
// anything on it. A dflockd server does that to every connection over its
// --max-connections limit (and a server shutting down, to new ones).
var ErrRefused = errors.New("pool: the server closed the connection before answering; it may be at its --max-connections limit")

// refusal returns a refusedError when err is the peer closing or
// resetting the connection; other errors pass unchanged.
func refusal(addr string, err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		err = opErr.Err // "read tcp a->b: " says nothing the address does not
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return &refusedError{addr: addr, cause: err}
	}
	return err
}

// refusedError is a connection the server closed before answering
// anything. It matches ErrRefused and ErrBroken.
type refusedError struct {
	addr  string
	cause error
}

func (e *refusedError) Error() string {
	return "pool: " + e.addr + " closed the connection before answering anything (" + e.cause.Error() + "); it may be at its --max-connections limit, or expect TLS"
}

// refusalWindow is how soon after it was set up a connection closed
// without an answer counts as refused. A server under load may accept
// (and so close) a connection a while after the handshake.
const refusalWindow = 2 * time.Second

func (e *refusedError) Is(target error) bool { return target == ErrRefused || target == ErrBroken }
func (e *refusedError) Unwrap() error        { return e.cause }

// call is one request awaiting its reply.
type call struct {
	req   wire.Request
	resp  wire.Response
	err   error
	grant *Grant
	sent  time.Time     // when it was queued: no later than the server read it
	seq   uint64        // how many requests the connection had queued before it
	done  chan struct{} // buffered; receives once
	// abandoned: the caller gave up; a grant in the reply is released.
	abandoned bool
	// internal: sent by the pool (keep-alive, clean-up); nobody waits.
	internal bool
	// discard: the caller waits for the reply but wants no grant in it
	// (withdrawing an enqueue); a grant is released like an abandoned one.
	discard bool
	// notify, when set (Call.Notify), also hears tag once the reply (or
	// the connection's failure) is in.
	notify chan<- int
	tag    int
	home   *sync.Pool // its pool's calls, which it goes back to
}

// answered signals the caller that cl's reply (or error) is in; c.mu is
// held.
func (cl *call) answered() {
	// Read first: once done is sent, the caller may recycle cl.
	ch, tag := cl.notify, cl.tag
	cl.done <- struct{}{}
	if ch != nil {
		notify(ch, tag)
	}
}

func (p *Pool) newCall(req *wire.Request) *call {
	cl := p.calls.Get().(*call)
	cl.req = *req
	return cl
}

func (cl *call) recycle() {
	*cl = call{done: cl.done, home: cl.home}
	cl.home.Put(cl)
}

func newConn(p *Pool, id uint64, in *watchedReader, lr *wire.LineReader, shared bool) *Conn {
	c := &Conn{
		p:        p,
		id:       id,
		nc:       in.Conn,
		in:       in,
		lr:       lr,
		shared:   shared,
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		grants:   make(map[string]*Grant),
		regs:     make(map[string]bool),
		lastSent: time.Now(),
		dialed:   time.Now(),
		// The server answered the auth request, if there was one.
		answered: p.cfg.AuthToken != "",
	}
	p.goroutines.Add(2)
	go c.readLoop()
	go c.writeLoop()
	return c
}

// ID is the connection's number within its pool.
func (c *Conn) ID() uint64 { return c.id }

// Err returns why the connection broke, or nil while it works.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken
}

// Grants returns how many locks and slots the connection holds.
func (c *Conn) Grants() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.grants)
}

// Result is a reply and, when it grants a lock or slot, the Grant that
// owns it from now on.
type Result struct {
	// Resp is the server's reply.
	Resp wire.Response
	// Grant is the lock the reply granted (an acquire answered "ok" or
	// "acquired"), now the caller's to release; nil otherwise.
	Grant *Grant
	// Sent is when the request was queued: the server read it later.
	Sent time.Time
}

// do sends req and waits for its reply or for ctx to end. If ctx ends
// first, the request stays in the pipeline and its reply is handled as
// unwanted: a lock it grants is released as soon as it arrives.
func (c *Conn) do(ctx context.Context, req *wire.Request, deadline time.Time) (Result, error) {
	cl, err := c.send(req, false)
	if err != nil {
		return Result{}, err
	}
	res, _, err := c.awaitBy(ctx, cl, deadline)
	return res, err
}

// await waits for cl's reply. If ctx ends first, it abandons cl and says
// so.
func (c *Conn) await(ctx context.Context, cl *call) (res Result, abandoned bool, err error) {
	return c.awaitBy(ctx, cl, time.Time{})
}

// awaitBy is await that also gives up at deadline, unless it is zero,
// with an error matching ErrNoReply.
func (c *Conn) awaitBy(ctx context.Context, cl *call, deadline time.Time) (res Result, abandoned bool, err error) {
	if why := c.waitBy(ctx, cl, deadline); why != nil && c.abandon(cl) {
		return Result{}, true, why
	}
	// In, or the reply won the race with the abandonment.
	<-cl.done
	res, err = cl.result()
	return res, false, err
}

// waitBy waits for cl's reply without taking it, until ctx ends or
// deadline (unless zero) passes, which it says as awaitBy does.
func (c *Conn) waitBy(ctx context.Context, cl *call, deadline time.Time) error {
	var late <-chan time.Time
	var t *time.Timer
	if !deadline.IsZero() {
		t = c.p.timers.Get().(*time.Timer)
		defer func() {
			t.Stop()
			c.p.timers.Put(t)
		}()
		wait := time.Until(deadline)
		if wait <= 0 {
			// Passed already (the calls of DoAllBy, awaited in turn):
			// the verdict at once, with no timer due as it is set (in a
			// synctest bubble under -race, such timers crashed the race
			// runtime, golang/go#78156).
			return c.overdue(ctx, cl, t)
		}
		t.Reset(wait)
		late = t.C
	}
	select {
	case <-cl.done:
		cl.done <- struct{}{} // for Await's receive
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-late:
		return c.overdue(ctx, cl, t)
	}
}

// ErrNoReply: a request's deadline (see Pool.DoBy) passed before its
// reply came.
var ErrNoReply = errors.New("pool: no reply by the deadline")

func (cl *call) result() (Result, error) {
	r, err := Result{Resp: cl.resp, Grant: cl.grant, Sent: cl.sent}, cl.err
	cl.recycle()
	return r, err
}

// send queues req for the writer and returns its call. It never blocks
// on the socket: a peer that stops reading delays only the writer.
func (c *Conn) send(req *wire.Request, internal bool) (*call, error) {
	c.mu.Lock()
	cl, err := c.queueLocked(req, internal)
	c.mu.Unlock()
	return cl, err
}

// queueLocked appends req to the write buffer and its call to the pending
// queue, and wakes the writer.
func (c *Conn) queueLocked(req *wire.Request, internal bool) (*call, error) {
	if c.broken != nil {
		return nil, fmt.Errorf("%w: %w", errNotSent, c.broken)
	}
	buf, err := req.Append(c.wbuf)
	if err != nil {
		return nil, err
	}
	c.wbuf = buf
	c.wcount++
	c.p.requests.Add(1)
	cl := c.p.newCall(req)
	cl.internal = internal
	cl.seq = c.queued
	c.queued++
	c.pending = append(c.pending, cl)
	c.lastSent = time.Now()
	cl.sent = c.lastSent
	select {
	case c.wake <- struct{}{}:
	default: // already awake; it will see this request
	}
	return cl, nil
}

// writeLoop writes queued requests until the connection breaks. Callers
// only queue, so a caller's context is never held up by a slow socket.
func (c *Conn) writeLoop() {
	defer c.p.goroutines.Done()
	for {
		select {
		case <-c.wake:
		case <-c.quit:
			return
		}
		for {
			if c.shared {
				// Let callers that are ready to send append first: under
				// load one write then carries many requests (and the
				// server answers them in one write), instead of one
				// syscall per request at each end.
				runtime.Gosched()
			}
			c.mu.Lock()
			if len(c.wbuf) == 0 || c.broken != nil {
				c.mu.Unlock()
				break
			}
			buf, n := c.wbuf, c.wcount
			c.wbuf, c.wcount = c.spare[:0], 0
			c.mu.Unlock()

			// Counted before it goes: a caller woken by the answer finds
			// its write in the metrics.
			if h := c.p.writeSize; h != nil {
				h.Record(context.Background(), int64(n), c.p.writeOpts...)
			}
			c.nc.SetWriteDeadline(time.Now().Add(c.p.cfg.WriteTimeout))
			_, err := c.nc.Write(buf)

			c.mu.Lock()
			c.spare = buf[:0]
			c.lastBatch, c.written, c.lastWrite = c.written, c.written+uint64(n), time.Now()
			c.mu.Unlock()
			if err != nil {
				c.fail(fmt.Errorf("%w: write: %v", ErrBroken, err))
				return
			}
		}
	}
}

// abandon marks cl as given up; false if its reply already arrived.
func (c *Conn) abandon(cl *call) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-cl.done:
		// Delivered; put the token back for the caller's receive.
		cl.done <- struct{}{}
		return false
	default:
	}
	cl.abandoned = true
	return true
}

func (c *Conn) readLoop() {
	defer c.p.goroutines.Done()
	for {
		// The longest a reply may be depends on the request it answers,
		// which may not be queued yet when the read begins: read up to the
		// stats bound; deliver holds the line to its own.
		line, err := c.lr.ReadLineLimit(wire.MaxStatsLen)
		if err != nil {
			c.mu.Lock()
			// dflockd closes a connection over its limit as soon as it
			// accepts it; one that broke later, or after an answer, went
			// down some other way (a crash, say).
			refused := !c.answered && c.broken == nil && time.Since(c.dialed) < refusalWindow
			c.mu.Unlock()
			if refused {
				if rerr := refusal(c.p.addr, err); errors.Is(rerr, ErrRefused) {
					c.p.connFailed(rerr)
					c.fail(rerr)
					return
				}
			}
			c.fail(fmt.Errorf("%w: read: %v", ErrBroken, err))
			return
		}
		if err := c.deliver(line); err != nil {
			c.fail(err)
			return
		}
	}
}

// deliver matches a reply line to the oldest pending call and applies it
// to the connection's grants and registrations.
func (c *Conn) deliver(line []byte) error {
	c.mu.Lock()
	if c.head == len(c.pending) {
		c.mu.Unlock()
		if string(line) == "error" {
			// The server's read timeout: it answers "error" and closes.
			return ErrServerTimedOut
		}
		return fmt.Errorf("%w: reply %q to no request", ErrBroken, truncate(line))
	}
	cl := c.pending[c.head]
	if limit := wire.ReplyLimit(cl.req.Cmd); len(line) > limit {
		// A stats reply has no bound; any other keeps the guard against a
		// peer that is not a dflockd server.
		c.mu.Unlock()
		return fmt.Errorf("%w: read: reply to %s of %d bytes: longer than %d", ErrBroken, cl.req.Cmd, len(line), limit)
	}
	c.pending[c.head] = nil
	c.head++
	if c.head == len(c.pending) {
		c.pending, c.head = c.pending[:0], 0
	}
	if !c.answered {
		c.answered = true
		c.p.connAnswered()
	}
	resp, perr := wire.ParseResponse(cl.req.Cmd, line)
	cl.resp, cl.err = resp, perr
	unwanted := cl.abandoned || cl.internal || cl.discard
	var cleanup *wire.Request
	if perr == nil {
		if cl.sent.After(c.heard) {
			c.heard = cl.sent
		}
		if resp.Status == wire.StatusErrorAuth {
			// The server closes next: the requests behind this one
			// were refused for the same reason.
			c.authRefused = true
		}
		cmd := cl.req.Cmd
		if cmd == wire.CmdWait || cmd == wire.CmdSemWait {
			delete(c.regs, cl.req.Key) // any reply to a wait ends the registration
		}
		enqueued := resp.Status == wire.StatusQueued || resp.Status == wire.StatusAcquired
		switch {
		case enqueued && unwanted:
			// An enqueue nobody will wait for: consume the registration.
			// A grant it brings comes back unwanted and is released.
			c.regs[cl.req.Key] = true
			cleanup = &wire.Request{Cmd: wire.FamilyOf(cmd).Wait, Key: cl.req.Key, Timeout: 0}
		case enqueued:
			c.regs[cl.req.Key] = true
		}
		if grants(&resp) && cleanup == nil {
			g := c.grants[resp.Token]
			switch {
			case g != nil:
				// The same token again on the same connection (the wait
				// after an enqueue acquired at once): the same grant,
				// whose lease the server has just restarted.
				g.extendLocked(cl.sent, resp.Lease)
			case !unwanted:
				g = newGrant(c, &cl.req, resp, cl.sent)
				c.grants[resp.Token] = g
			default:
				cleanup = &wire.Request{Cmd: wire.FamilyOf(cmd).Release, Key: cl.req.Key, Token: resp.Token}
			}
			if !unwanted {
				cl.grant = g
			}
		}
	}
	if cleanup != nil {
		// Queued now, under the lock, so that no request can get ahead of
		// it on this connection.
		if _, err := c.queueLocked(cleanup, true); err != nil {
			c.p.log.Debug("pool: clean-up request not queued", "addr", c.p.addr, "cmd", cleanup.Cmd.String(), "err", err)
		}
	}
	if cl.abandoned || cl.internal {
		cl.recycle()
	} else {
		cl.answered()
	}
	after := c.afterChangeLocked()
	done := c.retiring && c.head == len(c.pending)
	c.mu.Unlock()
	after()
	if perr != nil {
		// Out of step: every later reply would be misread.
		c.p.malformed.Add(1)
		return fmt.Errorf("%w: %w", ErrBroken, perr)
	}
	if done {
		return errClosing
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// grants reports whether resp gives its requester a lock or slot.
func grants(resp *wire.Response) bool {
	return resp.Token != "" && (resp.Status == wire.StatusOK || resp.Status == wire.StatusAcquired)
}

// afterChangeLocked offers a connection kept by its grants to the
// next blocking request once it holds none (or closes it, if it broke or
// is not clean). It returns what to do once c.mu is released.
func (c *Conn) afterChangeLocked() func() {
	if c.owner != ownerKept || len(c.grants) > 0 {
		return noop
	}
	if c.broken == nil && c.waitingLocked() {
		return noop // its abandoned wait will be answered
	}
	c.stopDrainingLocked()
	if c.broken != nil || !c.cleanLocked() {
		c.owner = ownerNone
		return c.retire
	}
	c.owner = ownerPuddle
	return func() { c.p.addFreed(c) }
}

// retire closes a connection the pool no longer wants once every request
// queued on it has been answered. Closing it at once would cut off a
// release still in flight: the server would release the lock with the
// connection, but its caller would be told the lock may have been lost
// before the call. A connection with nothing pending closes now.
func (c *Conn) retire() {
	c.mu.Lock()
	wait := c.broken == nil && c.head < len(c.pending)
	c.retiring = c.retiring || wait
	c.mu.Unlock()
	if !wait {
		c.close()
	}
}

// waitingLocked reports whether a request is pending whose answer
// changes whether the connection is fit for another user: a blocking one,
// an enqueue (it registers the key on the connection) or a wait (its
// answer ends the registration).
func (c *Conn) waitingLocked() bool {
	for _, cl := range c.pending[c.head:] {
		switch cl.req.Cmd {
		case wire.CmdEnqueue, wire.CmdSemEnqueue, wire.CmdWait, wire.CmdSemWait:
			return true
		}
		if holdsUp(&cl.req) {
			return true
		}
	}
	return false
}

func (c *Conn) stopDrainingLocked() { c.draining = false }

func noop() {}

// cleanLocked reports whether the connection can serve its next user as
// new: no enqueue registered on it and no blocking request still pending
// (an abandoned wait would hold up whatever is sent next).
func (c *Conn) cleanLocked() bool {
	return len(c.regs) == 0 && !c.waitingLocked()
}

// fail breaks the connection once: pending callers get err, every grant
// it holds is lost, and the socket is closed (which makes the server
// release everything the connection held).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return
	}
	if c.authRefused {
		err = fmt.Errorf("%w: %w (the server closed the connection after refusing it)", ErrBroken, wire.ErrAuth)
	}
	c.broken = err
	close(c.quit)
	for _, cl := range c.pending[c.head:] {
		cl.err = err
		if cl.abandoned || cl.internal {
			cl.recycle()
		} else {
			cl.answered()
		}
	}
	c.pending, c.head = nil, 0
	lost := make([]*Grant, 0, len(c.grants))
	for _, g := range c.grants {
		lost = append(lost, g.loseLocked(fmt.Errorf("%w: connection to %s broke: %w", ErrGrantLost, c.p.addr, err)))
	}
	clear(c.regs)
	if c.owner == ownerKept {
		c.owner = ownerNone
	}
	c.stopDrainingLocked()
	c.mu.Unlock()

	c.nc.Close()
	c.p.connBroke(c, len(lost), err)
	for _, g := range lost {
		g.notify()
	}
	if len(lost) > 0 && !errors.Is(err, errClosing) {
		c.p.releaseLost(lost)
	}
}

// close closes a connection on purpose (it holds nothing, or the pool is
// closing).
func (c *Conn) close() { c.fail(errClosing) }

var errClosing = fmt.Errorf("%w: closed by the pool", ErrBroken)

// ErrServerTimedOut: the server closed the connection after its read
// timeout (it answers "error" first). Harmless when the connection held
// nothing; otherwise the server released its locks. With keep-alives it
// means the server's read timeout is shorter than Config.ServerReadTimeout
// says.
var ErrServerTimedOut = fmt.Errorf("%w: closed by the server's read timeout", ErrBroken)

// errNotSent marks a request refused before it was queued, because its
// connection had already broken.
var errNotSent = errors.New("pool: request not sent")
