package fakeserver

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/dflock-go/dflock/wire"
)

// conn is one client connection. Like the real server it reads a request,
// handles it (perhaps blocking), answers, and only then reads the next. It
// does not read while it handles a request, so it does not notice a client
// hanging up until it has answered: a blocked wait outlives its client.
type conn struct {
	srv *Server
	id  uint64
	nc  net.Conn
	lr  *lineReader
	out []byte
	// cmd and key keep the first two lines of a request while the third
	// is read (readLine reuses its buffer).
	cmd, key []byte

	// Guarded by Server.mu.
	held    map[*holder]struct{}
	enq     map[string]*waiter // two-phase registrations by key
	blocked *waiter            // the queued l/sl in progress
	dead    bool               // closed; grants to its queued waiters have no owner

	killOnce sync.Once
	killed   chan struct{} // closed when the server closes this connection
	done     chan struct{} // closed when serve has cleaned up
}

func (s *Server) newConn(nc net.Conn) *conn {
	return &conn{
		srv:    s,
		id:     s.nextID.Add(1),
		nc:     nc,
		lr:     newLineReader(nc),
		out:    make([]byte, 0, 1024),
		held:   make(map[*holder]struct{}),
		enq:    make(map[string]*waiter),
		killed: make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// kill closes the connection from the server's side.
func (c *conn) kill() {
	c.markKilled()
	c.nc.Close()
}

// markKilled makes the connection answer nothing more. Dropping many
// connections marks them all before closing any, so a lock freed by one
// closing is never delivered on another that is about to close.
func (c *conn) markKilled() {
	c.killOnce.Do(func() { close(c.killed) })
}

func (c *conn) isKilled() bool {
	select {
	case <-c.killed:
		return true
	default:
		return false
	}
}

func (c *conn) serve() {
	log := c.srv.cfg.Logger.With("conn_id", c.id, "peer", c.nc.RemoteAddr().String())
	log.Debug("client connected")
	defer func() {
		c.kill()
		c.srv.release(c)
		close(c.done)
		log.Debug("client closed")
	}()

	if c.srv.cfg.AuthToken != "" && !c.authenticate(log) {
		return
	}
	for {
		req, err := c.readRequest()
		if err != nil {
			var br *errBadRequest
			switch {
			case errors.As(err, &br):
				// All three lines were read: answer and carry on.
				if c.srv.protoLog.admit("bad request: " + br.why) {
					log.Warn("protocol error", "err", err)
				}
				if !c.answer(wire.Response{Status: wire.StatusError}) {
					return
				}
				continue
			case errors.Is(err, errLineTooLong), isTimeout(err):
				// The stream can no longer be trusted: answer and close.
				kind := "line too long"
				if isTimeout(err) {
					c.srv.readTimeouts.Add(1)
					kind = "read timeout"
				}
				if c.srv.protoLog.admit(kind) {
					log.Warn("protocol error, closing", "err", err)
				}
				c.out = append(c.out, "error\n"...)
				c.flush()
				return
			default:
				return // the client left, or the server closed the connection
			}
		}
		c.srv.busy.Add(1)
		ok := c.stall()
		var res outcome
		if ok {
			res = c.handle(&req)
			ok = !res.gone && c.answer(res.resp)
		}
		c.srv.busy.Add(-1)
		if !ok {
			return
		}
	}
}

// authenticate reads the first request of a connection to a server with
// a token. Anything but "auth" with the right secret fails: a malformed
// request, a line too long, the read timeout, even the client closing its
// end (it still gets the reply). A failure is answered "error_auth" and,
// after a pause that slows guessing, the connection is closed.
func (c *conn) authenticate(log *slog.Logger) bool {
	req, err := c.readRequest()
	if err == nil && req.cmd == wire.CmdAuth &&
		subtle.ConstantTimeCompare([]byte(req.token), []byte(c.srv.cfg.AuthToken)) == 1 {
		return c.answer(wire.Response{Cmd: wire.CmdAuth, Status: wire.StatusOK})
	}
	if isTimeout(err) {
		c.srv.readTimeouts.Add(1)
	}
	if c.srv.protoLog.admit("authentication failed") {
		log.Warn("authentication failed")
	}
	c.out = append(c.out, "error_auth\n"...)
	c.flush()
	c.pause(100 * time.Millisecond)
	return false
}

// answer queues a reply and writes the batch once no further complete
// request is buffered: a pipelining client then gets its replies in one
// write, and a lone request is answered at once.
func (c *conn) answer(resp wire.Response) bool {
	c.out = resp.Append(c.out)
	if c.lr.hasLines(3) && len(c.out) < 64<<10 {
		return true
	}
	return c.flush()
}

func (c *conn) flush() bool {
	if len(c.out) == 0 {
		return true
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	_, err := c.nc.Write(c.out)
	if cap(c.out) > 64<<10 {
		c.out = make([]byte, 0, 1024) // don't keep a large stats reply's buffer
	} else {
		c.out = c.out[:0]
	}
	return err == nil
}

func (c *conn) readRequest() (request, error) {
	line, err := c.readLine()
	if err != nil {
		return request{}, err
	}
	c.cmd = append(c.cmd[:0], line...)
	if line, err = c.readLine(); err != nil {
		return request{}, err
	}
	c.key = append(c.key[:0], line...)
	if line, err = c.readLine(); err != nil {
		return request{}, err
	}
	return parseRequest(c.cmd, c.key, line, c.srv.cfg.DefaultLeaseTTL)
}

// readLine reads one line under the read timeout, which runs per line as
// in the real server, and only while the server waits for a request.
func (c *conn) readLine() ([]byte, error) {
	// A line already buffered needs no deadline: it is read without
	// waiting for the network.
	if bytes.IndexByte(c.lr.buffered(), '\n') < 0 {
		if err := c.nc.SetReadDeadline(time.Now().Add(c.srv.cfg.ReadTimeout)); err != nil {
			return nil, err
		}
	}
	return c.lr.readLine()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// pause waits for d unless the server closes the connection first.
func (c *conn) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.killed:
	}
}

// stall holds the request while the server is stalled (fault injection).
func (c *conn) stall() bool {
	for {
		until, lifted := c.srv.stallState()
		d := time.Until(until)
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-lifted:
		case <-c.killed:
			t.Stop()
			return false
		}
		t.Stop()
	}
}

type blockResult uint8

const (
	blockReady blockResult = iota
	blockTimeout
	blockShutdown
	blockGone
)

// block waits for ready, the timeout, a graceful shutdown, or the server
// closing the connection. It does not watch the socket: like the real
// server, the fake lets a wait run its course when the client hangs up,
// and notices only when it reads the next request.
func (c *conn) block(ready <-chan struct{}, timeout time.Duration) blockResult {
	if !c.flush() {
		return blockGone
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	res := blockGone
	select {
	case <-ready:
		res = blockReady
	case <-t.C:
		res = blockTimeout
	case <-c.srv.stopping:
		res = blockShutdown
	case <-c.killed:
	}
	if c.isKilled() {
		// The wait ends without a reply on a drop; a grant that raced
		// with it is released with the connection.
		return blockGone
	}
	return res
}
