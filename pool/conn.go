package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/dflock-go/dflock/wire"
)

// Conn is one connection to a server. Requests from any number of
// goroutines are pipelined on it: written together, answered in order.
// Locks granted through it belong to it on the server, so it tracks them as
// Holds and reports them lost if it breaks.
type Conn struct {
	p      *Pool
	id     uint64
	nc     net.Conn
	lr     *wire.LineReader
	shared bool // carries pipelined requests of many callers

	mu       sync.Mutex
	wbuf     []byte // requests not yet written
	spare    []byte // the other write buffer
	writing  bool   // a goroutine is writing wbuf
	pending  []*call
	head     int // pending[head:] await replies
	holds    map[*Hold]struct{}
	broken   error
	lastSent time.Time // when a request was last queued
	heard    time.Time // when the latest answered request was queued

}

// ErrBroken wraps the reason a connection stopped working.
var ErrBroken = errors.New("pool: connection broken")

// call is one request awaiting its reply.
type call struct {
	req  wire.Request
	resp wire.Response
	err  error
	hold *Hold
	sent time.Time     // when it was queued
	done chan struct{} // buffered; receives once
	// abandoned: the caller gave up; a grant in the reply is released.
	abandoned bool
	// internal: sent by the pool (keep-alive, clean-up); nobody waits.
	internal bool
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

func newCall(req *wire.Request) *call {
	cl := callPool.Get().(*call)
	cl.req = *req
	return cl
}

func (cl *call) recycle() {
	*cl = call{done: cl.done}
	callPool.Put(cl)
}

func newConn(p *Pool, id uint64, nc net.Conn, lr *wire.LineReader, shared bool) *Conn {
	c := &Conn{
		p:        p,
		id:       id,
		nc:       nc,
		lr:       lr,
		shared:   shared,
		holds:    make(map[*Hold]struct{}),
		lastSent: time.Now(),
	}
	go c.readLoop()
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

// Heard returns when the latest request that the server answered on this
// connection was sent: the server read it after that moment, so its read
// timeout cannot close the connection (and release its locks) before
// Heard plus that timeout. Zero until a reply arrives.
func (c *Conn) Heard() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heard
}

// Holds returns how many locks the connection holds.
func (c *Conn) Holds() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.holds)
}

// Result is a reply and, when it grants a lock or slot, the Hold that ties
// the grant to this connection.
type Result struct {
	Resp wire.Response
	Hold *Hold
}

// do sends req and waits for its reply or for ctx to end. If ctx ends
// first, the request stays in the pipeline; a grant it brings is released
// as soon as it arrives.
func (c *Conn) do(ctx context.Context, req *wire.Request) (Result, error) {
	cl, err := c.send(req, false)
	if err != nil {
		return Result{}, err
	}
	res, _, err := c.await(ctx, cl)
	return res, err
}

// await waits for cl's reply. If ctx ends first, it abandons cl (the
// reader then releases any grant in its reply) and says so.
func (c *Conn) await(ctx context.Context, cl *call) (res Result, abandoned bool, err error) {
	select {
	case <-cl.done:
		res, err = cl.result()
		return res, false, err
	case <-ctx.Done():
	}
	if !c.abandon(cl) {
		<-cl.done // the reply won the race
		res, err = cl.result()
		return res, false, err
	}
	return Result{}, true, ctx.Err()
}

func (cl *call) result() (Result, error) {
	r, err := Result{Resp: cl.resp, Hold: cl.hold}, cl.err
	cl.recycle()
	return r, err
}

// send queues req for writing and returns its call. The caller that finds
// no write in progress writes everything queued, its own request and
// those that arrive meanwhile, so concurrent callers share syscalls.
func (c *Conn) send(req *wire.Request, internal bool) (*call, error) {
	c.mu.Lock()
	cl, write, err := c.queueLocked(req, internal)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if write {
		c.writeLoop()
	}
	return cl, nil
}

// queueLocked appends req to the write buffer and its call to the pending
// queue; write reports whether the caller must now run writeLoop.
func (c *Conn) queueLocked(req *wire.Request, internal bool) (cl *call, write bool, err error) {
	if c.broken != nil {
		return nil, false, fmt.Errorf("%w: %w", errNotSent, c.broken)
	}
	buf, err := req.Append(c.wbuf)
	if err != nil {
		return nil, false, err
	}
	c.wbuf = buf
	cl = newCall(req)
	cl.internal = internal
	c.pending = append(c.pending, cl)
	c.lastSent = time.Now()
	cl.sent = c.lastSent
	write = !c.writing
	c.writing = true
	return cl, write, nil
}

func (c *Conn) writeLoop() {
	for {
		if c.shared {
			// Let callers that are ready to send append first: under load
			// one write then carries many requests (and the server answers
			// them in one write), instead of one syscall per request at
			// each end. An exclusive connection has nobody to wait for.
			runtime.Gosched()
		}
		c.mu.Lock()
		if len(c.wbuf) == 0 || c.broken != nil {
			c.writing = false
			c.mu.Unlock()
			return
		}
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.mu.Unlock()

		c.nc.SetWriteDeadline(time.Now().Add(c.p.cfg.WriteTimeout))
		_, err := c.nc.Write(buf)

		c.mu.Lock()
		c.spare = buf
		c.mu.Unlock()
		if err != nil {
			c.fail(fmt.Errorf("%w: write: %v", ErrBroken, err))
			return
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
	for {
		line, err := c.lr.ReadLine()
		if err != nil {
			c.fail(fmt.Errorf("%w: read: %v", ErrBroken, err))
			return
		}
		if err := c.deliver(line); err != nil {
			c.fail(err)
			return
		}
	}
}

// deliver matches a reply line to the oldest pending call.
func (c *Conn) deliver(line []byte) error {
	c.mu.Lock()
	if c.head == len(c.pending) {
		c.mu.Unlock()
		if string(line) == "error" {
			// The server's read timeout: it answers "error" and closes.
			return errServerIdleClose
		}
		return fmt.Errorf("%w: reply %q to no request", ErrBroken, truncate(line))
	}
	cl := c.pending[c.head]
	c.pending[c.head] = nil
	c.head++
	if c.head == len(c.pending) {
		c.pending, c.head = c.pending[:0], 0
	}
	resp, perr := wire.ParseResponse(cl.req.Cmd, line)
	cl.resp, cl.err = resp, perr
	if perr == nil && cl.sent.After(c.heard) {
		c.heard = cl.sent
	}
	unwanted := cl.abandoned || cl.internal
	var cleanup *wire.Request
	switch {
	case perr != nil:
	case grants(&resp) && unwanted:
		// Nobody wants this grant: give it back at once.
		cleanup = releaseFor(&cl.req, resp.Token)
	case grants(&resp):
		h := &Hold{c: c, key: cl.req.Key, token: resp.Token}
		c.holds[h] = struct{}{}
		cl.hold = h
	case resp.Status == wire.StatusQueued && unwanted:
		// An enqueue nobody will wait for: consume the registration
		// (a grant it brings comes back here and is released).
		cleanup = &wire.Request{Cmd: waitFor(cl.req.Cmd), Key: cl.req.Key, Timeout: 0}
	}
	write := false
	if cleanup != nil {
		// Queued now, under the lock, so that no request can get ahead
		// of it on this connection.
		var err error
		if _, write, err = c.queueLocked(cleanup, true); err != nil {
			c.p.log.Debug("pool: clean-up request not queued", "addr", c.p.addr, "cmd", cleanup.Cmd.String(), "err", err)
		}
	}
	if unwanted {
		cl.recycle()
	} else {
		cl.done <- struct{}{}
	}
	c.mu.Unlock()

	if write {
		// The write may block; the reader must keep reading.
		c.p.cleanups.Add(1)
		go func() {
			defer c.p.cleanups.Done()
			c.writeLoop()
		}()
	}
	if perr != nil {
		// Out of step: every later reply would be misread.
		return fmt.Errorf("%w: %w", ErrBroken, perr)
	}
	return nil
}

func waitFor(enqueue wire.Command) wire.Command {
	if enqueue == wire.CmdSemEnqueue {
		return wire.CmdSemWait
	}
	return wire.CmdWait
}

// sendInternal sends a request nobody waits for (keep-alive).
func (c *Conn) sendInternal(req *wire.Request) {
	if _, err := c.send(req, true); err != nil {
		c.p.log.Debug("pool: request not sent", "addr", c.p.addr, "cmd", req.Cmd.String(), "err", err)
	}
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

// releaseFor builds the release of a grant to req.
func releaseFor(req *wire.Request, token string) *wire.Request {
	cmd := wire.CmdRelease
	if req.Cmd.Semaphore() {
		cmd = wire.CmdSemRelease
	}
	return &wire.Request{Cmd: cmd, Key: req.Key, Token: token}
}

// fail breaks the connection once: pending callers get err, holders are
// told their locks are lost, and the socket is closed (which makes the
// server release everything the connection held).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return
	}
	c.broken = err
	for _, cl := range c.pending[c.head:] {
		cl.err = err
		if cl.abandoned || cl.internal {
			cl.recycle()
		} else {
			cl.done <- struct{}{}
		}
	}
	c.pending, c.head = nil, 0
	holds := c.holds
	c.holds = make(map[*Hold]struct{})
	var lost []func(error)
	for h := range holds {
		h.lost = err
		if h.onLost != nil {
			lost = append(lost, h.onLost)
		}
	}
	c.mu.Unlock()

	c.nc.Close()
	c.p.connBroke(c, len(holds), err)
	for _, f := range lost {
		f(err)
	}
}

// close closes a connection on purpose (it holds nothing, or the pool is
// closing).
func (c *Conn) close() { c.fail(errClosing) }

var errClosing = fmt.Errorf("%w: closed by the pool", ErrBroken)

// errServerIdleClose: the server timed the connection out. Harmless when
// it held nothing; otherwise the server released its locks.
var errServerIdleClose = fmt.Errorf("%w: closed by the server's read timeout", ErrBroken)

// errNotSent marks a request refused before it was queued, because its
// connection had already broken.
var errNotSent = errors.New("pool: request not sent")

// Hold is one lock or slot held through a connection. The server releases
// it if the connection closes, so the holder must learn when that happens.
type Hold struct {
	c          *Conn
	key, token string
	onLost     func(error)
	lost       error
	done       bool
}

// Conn returns the connection that holds the lock.
func (h *Hold) Conn() *Conn { return h.c }

// OnLost arranges for f to run once, with the reason, if the connection
// breaks while the hold is active. If it already broke, f runs now.
func (h *Hold) OnLost(f func(error)) {
	h.c.mu.Lock()
	lost := h.lost
	if lost == nil && !h.done {
		h.onLost = f
	}
	h.c.mu.Unlock()
	if lost != nil && !h.done {
		f(lost)
	}
}

// Done stops tracking the hold: the lock was released or found lost. Safe
// to call twice.
func (h *Hold) Done() {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	h.done = true
	h.onLost = nil
	delete(h.c.holds, h)
}
