// Package starve holds a connection's reader or writer off its socket,
// as a process starved of CPU holds its goroutines, while the peer's
// bytes still arrive: tests of a client that must not blame its servers
// for its own delays use it, in virtual time, over package memnet.
package starve

import (
	"net"
	"sync/atomic"
	"time"
)

// Conn is a connection whose Reads and Writes can be held.
type Conn struct {
	net.Conn
	reads, writes atomic.Pointer[chan struct{}] // closed when the hold ends
	arrived       atomic.Int64                  // bytes read from Conn and held back from the reader
}

// New wraps nc, which must tell its unread bytes (Buffered), as memnet's
// connections do.
func New(nc net.Conn) *Conn { return &Conn{Conn: nc} }

// Read reads from the connection; bytes that arrive while reads are held
// reach the caller when the hold ends, as a starved goroutine sees them.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if g := c.reads.Load(); g != nil {
		c.arrived.Store(int64(n))
		<-*g
		c.arrived.Store(0)
	}
	return n, err
}

// Write writes to the connection once a hold on writes has ended.
func (c *Conn) Write(b []byte) (int, error) {
	if g := c.writes.Load(); g != nil {
		<-*g
	}
	return c.Conn.Write(b)
}

// Buffered returns the bytes received and not yet handed to a Read,
// those held back included, as the kernel tells of a socket (FIONREAD).
func (c *Conn) Buffered() int {
	return int(c.arrived.Load()) + c.Conn.(interface{ Buffered() int }).Buffered()
}

// HoldReads holds the bytes that arrive from now on from the reader for
// d (on the bubble's clock in a synctest bubble).
func (c *Conn) HoldReads(d time.Duration) { hold(&c.reads, d) }

// HoldWrites holds the writes from now on for d.
func (c *Conn) HoldWrites(d time.Duration) { hold(&c.writes, d) }

func hold(side *atomic.Pointer[chan struct{}], d time.Duration) {
	g := make(chan struct{})
	side.Store(&g)
	time.AfterFunc(d, func() {
		side.Store(nil)
		close(g)
	})
}
