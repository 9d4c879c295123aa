package memnet

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// conn is one end of a connection: it reads what the other end writes to
// in, and writes to out, which the other end reads.
//
// Every wait is a select on channels (a pipe's wait, a deadline's, the
// conn's closed), never a mutex or a condition variable held across it:
// a goroutine waiting in Read or Write is then durably blocked, and a
// synctest bubble's clock can advance past it. The mutexes guard a few
// field updates each.
type conn struct {
	local, remote addr
	in, out       *pipe
	rd, wd        deadline
	// wlock, a token of capacity 1, keeps concurrent Writes whole, as on a
	// socket; a channel, so that a Write waiting for it can give up at its
	// deadline or the close.
	wlock     chan struct{}
	closeOnce sync.Once
	closed    chan struct{} // closed by Close: this end's calls fail
}

func newPair(client, server addr) (*conn, *conn) {
	up, down := &pipe{}, &pipe{}
	c := &conn{local: client, remote: server, in: down, out: up, wlock: make(chan struct{}, 1), closed: make(chan struct{})}
	s := &conn{local: server, remote: client, in: up, out: down, wlock: make(chan struct{}, 1), closed: make(chan struct{})}
	return c, s
}

// pipe is one direction of a connection: the bytes written and not yet
// read.
type pipe struct {
	mu  sync.Mutex
	buf []byte
	r   int // buf[r:] is unread
	// eof: the writing end closed or shut down its side; the reader gets
	// io.EOF once it has read what was written before.
	eof bool
	// gone: the reading end closed. As on TCP, the next write still
	// succeeds (the data is dropped: the peer's reset has not come back
	// yet); the one after fails.
	gone, reset bool
	// wait is closed, and cleared, at the next change (bytes written or
	// read, an end closed); nil while nobody waits.
	wait chan struct{}
}

func (p *pipe) changedLocked() {
	if p.wait != nil {
		close(p.wait)
		p.wait = nil
	}
}

func (p *pipe) waitLocked() <-chan struct{} {
	if p.wait == nil {
		p.wait = make(chan struct{})
	}
	return p.wait
}

func (p *pipe) appendLocked(b []byte) {
	if p.r > 0 && len(p.buf)+len(b) > cap(p.buf) {
		n := copy(p.buf, p.buf[p.r:])
		p.buf, p.r = p.buf[:n], 0
	}
	p.buf = append(p.buf, b...)
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: c.local.Network(), Source: c.local, Addr: c.remote, Err: err}
}

func passed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Read reads what the peer wrote, waiting until there is something, the
// peer closes its side (io.EOF once the bytes before are read), the read
// deadline passes or this end is closed. As on a socket, a deadline that
// has passed fails the read even when bytes wait.
func (c *conn) Read(b []byte) (int, error) {
	p := c.in
	for {
		if c.isClosed() {
			return 0, c.opErr("read", net.ErrClosed)
		}
		expired := c.rd.wait()
		if passed(expired) {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		p.mu.Lock()
		if p.r < len(p.buf) {
			n := copy(b, p.buf[p.r:])
			p.r += n
			if p.r == len(p.buf) {
				p.buf, p.r = p.buf[:0], 0
			}
			p.changedLocked() // a writer may wait for room
			p.mu.Unlock()
			return n, nil
		}
		if p.eof {
			p.mu.Unlock()
			return 0, io.EOF
		}
		if len(b) == 0 {
			p.mu.Unlock()
			return 0, nil
		}
		c.awaitLocked(p, expired)
	}
}

// awaitLocked waits until p changes, expired is closed or this end
// closes; p.mu is held, and released.
func (c *conn) awaitLocked(p *pipe, expired <-chan struct{}) {
	wait := p.waitLocked()
	p.mu.Unlock()
	select {
	case <-wait:
	case <-expired:
	case <-c.closed:
	}
}

// Write copies b into the peer's buffer and returns; it waits only while
// that buffer holds BufferSize bytes, until the peer reads, the write
// deadline passes or an end closes. A write after this end's CloseWrite
// fails. The first write after the peer closed succeeds, its bytes
// dropped, and later ones fail with EPIPE, as on TCP once the peer's
// reset has come back.
func (c *conn) Write(b []byte) (int, error) {
	select {
	case c.wlock <- struct{}{}:
	case <-c.closed:
		return 0, c.opErr("write", net.ErrClosed)
	case <-c.wd.wait():
		return 0, c.opErr("write", os.ErrDeadlineExceeded)
	}
	defer func() { <-c.wlock }()
	p := c.out
	n := 0
	for {
		if c.isClosed() {
			return n, c.opErr("write", net.ErrClosed)
		}
		expired := c.wd.wait()
		if passed(expired) {
			return n, c.opErr("write", os.ErrDeadlineExceeded)
		}
		p.mu.Lock()
		switch {
		case p.eof:
			p.mu.Unlock()
			return n, c.opErr("write", &os.SyscallError{Syscall: "write", Err: syscall.EPIPE})
		case p.gone && (p.reset || n > 0):
			p.mu.Unlock()
			return n, c.opErr("write", &os.SyscallError{Syscall: "write", Err: syscall.EPIPE})
		case p.gone:
			p.reset = true
			p.mu.Unlock()
			return len(b), nil
		}
		if room := BufferSize - (len(p.buf) - p.r); room > 0 && n < len(b) {
			k := min(room, len(b)-n)
			p.appendLocked(b[n : n+k])
			n += k
			p.changedLocked()
		}
		if n == len(b) {
			p.mu.Unlock()
			return n, nil
		}
		c.awaitLocked(p, expired)
	}
}

// Close closes both directions. The peer reads what this end wrote, then
// io.EOF; what the peer had sent and this end had not read is dropped.
// Calls blocked on this end return net.ErrClosed.
func (c *conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closed)
	})
	if !first {
		return c.opErr("close", net.ErrClosed)
	}
	c.rd.stop()
	c.wd.stop()
	c.out.mu.Lock()
	c.out.eof = true
	c.out.changedLocked()
	c.out.mu.Unlock()
	c.in.mu.Lock()
	c.in.gone = true
	c.in.buf, c.in.r = nil, 0
	c.in.changedLocked()
	c.in.mu.Unlock()
	return nil
}

// CloseWrite shuts down the writing side, as (*net.TCPConn).CloseWrite
// does: the peer reads what was written, then io.EOF, and this end can
// still read.
func (c *conn) CloseWrite() error {
	if c.isClosed() {
		return c.opErr("close", net.ErrClosed)
	}
	c.out.mu.Lock()
	c.out.eof = true
	c.out.changedLocked()
	c.out.mu.Unlock()
	return nil
}

// Buffered returns how many bytes the other end wrote that no Read took
// yet, as the kernel tells of a socket (FIONREAD).
func (c *conn) Buffered() int {
	c.in.mu.Lock()
	defer c.in.mu.Unlock()
	return len(c.in.buf) - c.in.r
}

// LocalAddr is this end's address. A dialling end's port is unique in its
// Network (see Network.Dial).
func (c *conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the other end's address.
func (c *conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline sets the deadline of pending and later reads; zero
// means none.
func (c *conn) SetReadDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rd.set(t)
	return nil
}

// SetWriteDeadline sets the deadline of pending and later writes; zero
// means none.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opErr("set", net.ErrClosed)
	}
	c.wd.set(t)
	return nil
}

// deadline is a read or write deadline: a channel closed when it passes,
// by a timer, so that in a bubble it passes on the bubble's clock.
type deadline struct {
	mu    sync.Mutex
	gen   uint64    // counts set and stop calls: a timer set before the last is stale
	t     time.Time // zero for none
	timer *time.Timer
	ch    chan struct{} // closed once the deadline has passed; nil until needed
	over  bool          // ch is closed
}

// set replaces the deadline. Waiters keep their channel while no deadline
// passes, so moving a deadline also moves it for a call already waiting.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
	if d.over {
		d.ch, d.over = nil, false
	}
	d.t = t
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.passLocked()
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			d.passLocked()
		}
	})
}

func (d *deadline) passLocked() {
	if d.over {
		return // read off the clock before its timer ran
	}
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	close(d.ch)
	d.over = true
}

// wait returns a channel closed when the deadline passes. It reads the
// clock too: at the very moment of the deadline its timer may not have
// run yet, and the deadline has passed all the same.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.over && !d.t.IsZero() && !time.Now().Before(d.t) {
		d.passLocked()
	}
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

// stop drops the timer of a closed connection.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

// stopLocked drops the timer, and makes one that already fired do
// nothing; d.mu is held.
func (d *deadline) stopLocked() {
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
