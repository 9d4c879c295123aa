package fakeserver

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/wire"
)

// conn is one client connection. Like the real server it reads a request,
// handles it (perhaps blocking), answers, and only then reads the next.
type conn struct {
	srv *Server
	id  uint64
	nc  net.Conn
	lr  *wire.LineReader
	out []byte
	// cmd and key keep the first two lines of a request while the third
	// is read (ReadLine reuses its buffer).
	cmd, key []byte

	// Guarded by Server.mu.
	held    map[*holder]struct{}
	enq     map[string]*waiter // two-phase registrations by key
	blocked *waiter            // the queued l/sl in progress

	mu       sync.Mutex // orders shutdown against read-deadline changes
	shutting bool

	killOnce sync.Once
	killed   chan struct{} // closed when the server closes this connection
	done     chan struct{} // closed when serve has cleaned up
}

var errShutdown = errors.New("fakeserver: shutting down")

func (s *Server) newConn(nc net.Conn) *conn {
	return &conn{
		srv:    s,
		id:     s.nextID.Add(1),
		nc:     nc,
		lr:     wire.NewLineReader(nc, wire.MaxLineLen),
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

	authed := c.srv.cfg.AuthToken == ""
	for {
		req, err := c.readRequest()
		if err != nil && c.isShutting() {
			return
		}
		if !authed {
			// Anything but the right secret first, including a broken or
			// late request, fails authentication.
			if err == nil && req.Cmd == wire.CmdAuth &&
				subtle.ConstantTimeCompare([]byte(req.Secret), []byte(c.srv.cfg.AuthToken)) == 1 {
				authed = true
				c.answer(wire.Response{Cmd: wire.CmdAuth, Status: wire.StatusOK})
				continue
			}
			if err != nil && disconnected(err) {
				return
			}
			if isTimeout(err) {
				c.srv.readTimeouts.Add(1)
			}
			log.Warn("authentication failed")
			c.out = append(c.out, "error_auth\n"...)
			c.flush()
			c.pause(100 * time.Millisecond)
			return
		}
		if err != nil {
			var re *wire.RequestError
			switch {
			case errors.As(err, &re) && !re.TooLong:
				// All three lines were read: answer and carry on.
				log.Warn("protocol error", "err", err)
				if !c.answer(wire.Response{Status: wire.StatusError}) {
					return
				}
				continue
			case disconnected(err):
				return
			default:
				// Line too long or read timeout: the stream can no longer
				// be trusted.
				if isTimeout(err) {
					c.srv.readTimeouts.Add(1)
				}
				log.Warn("protocol error, closing", "err", err)
				c.out = append(c.out, "error\n"...)
				c.flush()
				return
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

// answer queues a reply and writes the batch once no further complete
// request is buffered: a pipelining client then gets its replies in one
// write, and a lone request is answered at once.
func (c *conn) answer(resp wire.Response) bool {
	c.out = resp.Append(c.out)
	if c.lr.HasBufferedLines(3) && len(c.out) < 64<<10 {
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

func (c *conn) readRequest() (wire.Request, error) {
	line, err := c.readLine()
	if err != nil {
		return wire.Request{}, err
	}
	c.cmd = append(c.cmd[:0], line...)
	if line, err = c.readLine(); err != nil {
		return wire.Request{}, err
	}
	c.key = append(c.key[:0], line...)
	if line, err = c.readLine(); err != nil {
		return wire.Request{}, err
	}
	return wire.ParseRequest(c.cmd, c.key, line)
}

// readLine reads one line under the read timeout, which runs per line as
// in the real server.
func (c *conn) readLine() ([]byte, error) {
	if err := c.armReadDeadline(); err != nil {
		return nil, err
	}
	return c.lr.ReadLine()
}

// armReadDeadline starts the read timeout before a read that has to wait
// for the network. A line already buffered needs none.
func (c *conn) armReadDeadline() error {
	if bytes.IndexByte(c.lr.Buffered(), '\n') >= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shutting {
		return errShutdown
	}
	return c.nc.SetReadDeadline(time.Now().Add(c.srv.cfg.ReadTimeout))
}

func (c *conn) isShutting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shutting
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func disconnected(err error) bool {
	if isTimeout(err) {
		return false // the read timeout, a protocol violation
	}
	var re *wire.RequestError
	return !errors.As(err, &re)
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
	blockGone
)

// block waits for ready or the timeout. Meanwhile it watches the socket so
// that a client hanging up cancels the wait, as closing the connection is
// the protocol's only way to cancel one.
func (c *conn) block(ready <-chan struct{}, timeout time.Duration) blockResult {
	if !c.flush() {
		return blockGone
	}
	c.mu.Lock()
	if c.shutting {
		c.mu.Unlock()
		return blockGone
	}
	// The read timeout does not run while a request is being handled.
	c.nc.SetReadDeadline(time.Time{})
	c.mu.Unlock()

	var stopping atomic.Bool
	gone := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			err := c.lr.Fill()
			switch {
			case err == nil:
				continue // a pipelined request; keep watching
			case errors.Is(err, bufio.ErrBufferFull), stopping.Load():
				return
			default:
				close(gone)
				return
			}
		}
	}()
	defer func() {
		stopping.Store(true)
		c.nc.SetReadDeadline(time.Now())
		<-watched
	}()

	t := time.NewTimer(timeout)
	defer t.Stop()
	res := blockGone
	select {
	case <-ready:
		res = blockReady
	case <-t.C:
		res = blockTimeout
	case <-gone:
	case <-c.killed:
	}
	if c.isShutting() || c.isKilled() {
		// A wait ends without a reply on shutdown or a drop; a grant that
		// raced with it is released with the connection.
		return blockGone
	}
	return res
}
