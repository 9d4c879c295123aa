package pool

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"time"
)

// A reply's deadline passing says the server was silent only if our own
// process was not what held the reply up. Under CPU starvation the
// deadline's timer goroutine can run before the connection's reader (the
// runtime favours a goroutine a timer wakes), and before the writer sent
// the request at all: the answer may be in the socket, unread. So at a
// deadline the connection is checked first (Conn.arriving), and while
// something is on its way the verdict waits, a step at a time, up to
// maxStarvedGrace.
const (
	// maxStarvedGrace bounds how long past its deadline a call waits
	// for an answer that is on its way. A stalled or cut-off server sends
	// nothing, so its calls get none of it.
	maxStarvedGrace = 500 * time.Millisecond
	// starvedStep is how long each look at the connection waits.
	starvedStep = 5 * time.Millisecond
)

// watchedReader is the connection as its reader sees it: it notes when
// the reader is parked in Read, waiting for the server, so that the
// connection can tell a reader that has bytes to handle from one that
// has none.
type watchedReader struct {
	net.Conn
	parked atomic.Bool
}

func (r *watchedReader) Read(b []byte) (int, error) {
	r.parked.Store(true)
	n, err := r.Conn.Read(b)
	r.parked.Store(false)
	return n, err
}

// buffered is a connection that can tell how many bytes it has received
// and not yet handed to Read (the in-memory transport of the tests does).
type buffered interface {
	Buffered() int
}

// unreadBytes returns how many bytes nc has received that no Read took
// yet, and false if that cannot be known.
func unreadBytes(nc net.Conn) (int, bool) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if b, ok := nc.(buffered); ok {
		return b.Buffered(), true
	}
	return socketUnread(nc)
}

// arriving reports whether cl's answer may be held up in our own
// process: its request is not written yet (queued, or the writer is in
// the middle of it), or was written only a moment ago (a starved writer
// sent it late: the server has had no time), or the reader has bytes it
// has not handled (it is not parked in Read), or the socket has bytes
// the reader was not woken for.
func (c *Conn) arriving(cl *call) bool {
	c.mu.Lock()
	unwritten := cl.seq >= c.written
	justWritten := cl.seq >= c.lastBatch && time.Since(c.lastWrite) < starvedStep
	broken := c.broken != nil
	c.mu.Unlock()
	switch {
	case broken:
		return false
	case unwritten, justWritten, !c.in.parked.Load():
		return true
	}
	n, ok := unreadBytes(c.in.Conn)
	return ok && n > 0
}

// overdue is waitBy's verdict once cl's deadline has passed: nil if its
// reply turns out to be in (already, or once what is on its way has been
// read), ctx's error if ctx ends meanwhile, else ErrNoReply. t is the
// deadline's timer, fired and drained, to reuse.
func (c *Conn) overdue(ctx context.Context, cl *call, t *time.Timer) error {
	giveUp := time.Now().Add(maxStarvedGrace)
	for {
		select {
		case <-cl.done:
			cl.done <- struct{}{} // for Await's receive
			return nil
		default:
		}
		if !c.arriving(cl) || time.Now().After(giveUp) {
			return fmt.Errorf("%w from %s", ErrNoReply, c.p.addr)
		}
		c.p.starvedWaits.Add(1)
		// Let the reader and the writer, runnable and queued behind us,
		// run first.
		runtime.Gosched()
		t.Reset(starvedStep)
		select {
		case <-cl.done:
			cl.done <- struct{}{}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
