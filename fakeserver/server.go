package fakeserver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/wire"
)

// Server is an in-memory dflockd listening on TCP (or TLS), or on what
// Config.Listen gives it.
type Server struct {
	cfg Config

	mu    sync.Mutex // guards tab, conns and everything they point to
	tab   *table
	conns map[uint64]*conn
	// Fault bookkeeping for TokenState, also guarded by mu: epoch counts
	// the faults that may hit any holder; a grant before stallEnd, while
	// refusing, or while dropping > 0 is made during a stall, a refusal
	// or DropConnections; lost remembers tokens removed after a fault
	// touched them.
	epoch    uint32
	stallEnd time.Time
	dropping int
	lost     lostTokens

	life     sync.Mutex // serialises Stop, Restart, Close and Shutdown
	ln       net.Listener
	addr     atomic.Pointer[string] // read without life: Addr must not wait for a Shutdown
	accepted chan struct{}          // closed when the accept loop of ln ends
	connWG   sync.WaitGroup
	closed   bool
	drained  bool // closed by Shutdown, which Restart may undo

	nextID   atomic.Uint64
	refusing atomic.Bool
	busy     atomic.Int64 // connections handling a request

	faults       atomic.Uint64 // fault hooks called
	readTimeouts atomic.Uint64 // connections closed for the read timeout
	protoLog     *protocolLog

	stallMu     sync.Mutex
	stallUntil  time.Time
	stallLifted chan struct{}

	bgStop chan struct{}
	bgDone chan struct{}
	// stopping is closed when a graceful Shutdown begins: blocked
	// requests then end with "error".
	stopping chan struct{}
}

// ErrClosed is returned by operations on a closed Server.
var ErrClosed = errors.New("fakeserver: closed")

// Start listens on cfg's address and serves in the background until Close.
func Start(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         cfg,
		tab:         newTable(),
		conns:       make(map[uint64]*conn),
		stallLifted: make(chan struct{}),
		bgStop:      make(chan struct{}),
		bgDone:      make(chan struct{}),
		stopping:    make(chan struct{}),
		protoLog:    newProtocolLog(cfg.Logger, protocolLogInterval),
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	s.addr.Store(&addr)
	if err := s.listen(); err != nil {
		return nil, err
	}
	go s.background()
	return s, nil
}

// Addr is the address the server listens on, host:port. It stays the same
// across Stop and Restart.
func (s *Server) Addr() string {
	return *s.addr.Load()
}

func (s *Server) listen() error {
	listen := s.cfg.Listen
	if listen == nil {
		listen = net.Listen
	}
	ln, err := listen("tcp", *s.addr.Load())
	if err != nil {
		return err
	}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	s.ln = ln
	addr := ln.Addr().String()
	s.addr.Store(&addr)
	s.accepted = make(chan struct{})
	go s.acceptLoop(ln, s.accepted)
	return nil
}

func (s *Server) acceptLoop(ln net.Listener, done chan struct{}) {
	defer close(done)
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.cfg.Logger.Warn("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.mu.Lock()
		full := s.cfg.MaxConnections > 0 && len(s.conns) >= s.cfg.MaxConnections
		if full || s.refusing.Load() {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		c := s.newConn(nc)
		s.conns[c.id] = c
		s.connWG.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.connWG.Done()
			c.serve()
		}()
	}
}

// release forgets a closed connection. With auto-release (the default),
// its queued enqueues leave their queues and every lock and slot it holds
// is handed to the next waiter. Without, like the real server, it undoes
// nothing: what it holds stays held until the lease ends, and its queued
// enqueues stay in line and are granted in turn, to nobody.
func (s *Server) release(c *conn) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c.id)
	c.dead = true
	// Only a connection the server closed mid-wait (DropConnections,
	// Stop) gets here with its l/sl still queued.
	if w := c.blocked; w != nil && w.queued {
		w.e.unlink(w)
	}
	if s.cfg.DisableAutoRelease {
		for h := range c.held {
			h.owner = nil
		}
		clear(c.held)
		return
	}
	for _, w := range c.enq {
		if w.queued {
			w.e.unlink(w)
		}
	}
	for h := range c.held {
		s.removeHolder(h, goneReleased, now)
		s.promote(h.e, now)
	}
}

func (s *Server) background() {
	defer close(s.bgDone)
	sweep := time.NewTicker(s.cfg.LeaseSweepInterval)
	defer sweep.Stop()
	gc := time.NewTicker(s.cfg.GCInterval)
	defer gc.Stop()
	logTick := time.NewTicker(protocolLogInterval)
	defer logTick.Stop()
	for {
		select {
		// The clock is read when a tick is handled, not when it fired,
		// as in the real server.
		case <-sweep.C:
			s.sweep(time.Now())
		case <-gc.C:
			s.collect(time.Now())
		case now := <-logTick.C:
			s.protoLog.roll(now)
		case <-s.bgStop:
			return
		}
	}
}

// Stats returns what the stats command would answer now.
func (s *Server) Stats() wire.Stats { return s.snapshot(time.Now()) }

// Busy returns how many connections are handling a request now: blocked
// in a wait, held by a stall, or about to answer.
func (s *Server) Busy() int { return int(s.busy.Load()) }

// ReadTimeoutCloses returns how many connections the server has closed
// because its read timeout ran out (including a first request that never
// came on a server with an auth token).
func (s *Server) ReadTimeoutCloses() uint64 { return s.readTimeouts.Load() }

// Close stops the server at once: the listener and every connection are
// closed and all state is dropped. It is safe to call twice.
func (s *Server) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		s.drained = false // for good: Restart no longer undoes a Shutdown
		return nil
	}
	s.closed = true
	s.stopLocked()
	close(s.bgStop)
	<-s.bgDone
	s.protoLog.flush()
	return nil
}

// Shutdown stops the server as the real one does on SIGTERM. It stops
// accepting, and stops the lease sweep and the collection of idle keys.
// Requests blocked in a wait end at once with "error" (unless granted
// meanwhile), and so does any later wait that would have to block; a
// try-lock on a taken key still answers "timeout". Open connections are
// not closed: they are served as before until they close, or until their
// read timeout closes them (answered "error"). Connections still open when
// ShutdownTimeout passes or ctx ends are closed without a reply; Shutdown
// then returns the reason. Restart starts a shut-down server again, empty,
// as a supervisor restarts dflockd after a drain.
func (s *Server) Shutdown(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.closeListenerLocked()
	close(s.bgStop)
	<-s.bgDone
	close(s.stopping)

	drained := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(drained)
	}()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	var err error
	// The protocol errors of the drain are counted too; their count is
	// the last line.
	defer s.protoLog.flush()
	select {
	case <-drained:
		s.forgetLocked()
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = context.DeadlineExceeded
	}
	// A fault, as in Stop: the holders on the connections closed now lose
	// their locks with no answer.
	s.mu.Lock()
	s.faultLocked()
	s.dropping++
	s.mu.Unlock()
	s.dropAll()
	<-drained
	s.mu.Lock()
	s.dropping--
	s.mu.Unlock()
	s.forgetLocked()
	return err
}

// forgetLocked ends a Shutdown: the process is gone, and so is its state
// (what auto-release left, if disabled). Restart may start it again.
func (s *Server) forgetLocked() {
	s.drained = true
	s.mu.Lock()
	s.tab = newTable()
	s.mu.Unlock()
}

func (s *Server) stopLocked() {
	s.closeListenerLocked()
	s.dropAll()
	s.mu.Lock()
	// Holders left (auto-release disabled) are forgotten with the table.
	for _, e := range s.tab.keys {
		for _, h := range e.holders {
			if s.faultedLocked(h) {
				s.noteLostLocked(h)
			}
		}
	}
	s.tab = newTable()
	s.mu.Unlock()
}

// closeListenerLocked stops accepting and waits for the accept loop.
func (s *Server) closeListenerLocked() {
	if s.ln != nil {
		s.ln.Close()
		<-s.accepted
		s.ln = nil
	}
}

// dropAll closes every connection and waits until each has released what
// it held.
func (s *Server) dropAll() int {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.markKilled()
	}
	for _, c := range conns {
		c.nc.Close()
	}
	for _, c := range conns {
		<-c.done
	}
	return len(conns)
}
