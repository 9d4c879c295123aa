// Package testproxy is a proxy for tests: it stands between clients and
// a server, counts what the clients send, shows it to a callback, and can
// swallow bytes both ways while keeping every connection open, as a
// network partition looks from both ends.
//
// Start runs it on loopback TCP. StartWith takes the listen and dial
// functions of another network, such as an in-memory one (internal/memnet)
// in a testing/synctest bubble, where a partition then lasts exactly as
// long as the test's virtual clock says.
package testproxy

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards every connection made to Addr to the target server.
type Proxy struct {
	ln     net.Listener
	target string
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	// onData sees every chunk a client sends, with the number of its
	// connection (from 1), before it is forwarded.
	onData func(conn int64, b []byte)

	partitioned    atomic.Bool
	accepts, lines atomic.Int64

	mu    sync.Mutex // guards conns
	conns []net.Conn
	wg    sync.WaitGroup
}

// Config says where a proxy listens, how it reaches its target, and what
// it shows a test. The zero value is a proxy on loopback TCP.
type Config struct {
	// Listen opens the proxy's listener on "127.0.0.1:0"; nil is
	// net.Listen.
	Listen func(network, addr string) (net.Listener, error)
	// Dial connects to the target for each connection accepted; nil is a
	// net.Dialer's.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnData, when set, sees every chunk a client sends, with the number
	// of its connection (from 1), before it is forwarded.
	OnData func(conn int64, b []byte)
}

// Start starts a proxy to target on 127.0.0.1, closed when t ends.
// onData may be nil.
func Start(t testing.TB, target string, onData func(conn int64, b []byte)) *Proxy {
	t.Helper()
	return StartWith(t, target, Config{OnData: onData})
}

// StartWith starts a proxy to target with cfg, closed when t ends. In a
// synctest bubble, call it inside the bubble, with the bubble's network.
func StartWith(t testing.TB, target string, cfg Config) *Proxy {
	t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = net.Listen
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	ln, err := cfg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, dial: cfg.Dial, onData: cfg.OnData}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepts is how many connections clients made.
func (p *Proxy) Accepts() int64 { return p.accepts.Load() }

// Requests is how many requests clients sent: each is three lines.
func (p *Proxy) Requests() int64 { return p.lines.Load() / 3 }

// Partition starts (true) or ends (false) swallowing every byte, both
// ways, on every connection, which stay open.
func (p *Proxy) Partition(on bool) { p.partitioned.Store(on) }

// Reset ends a partition by closing every connection through the proxy,
// as a firewall that dropped its state would: the bytes swallowed are
// gone, so the streams could not go on. New connections work.
func (p *Proxy) Reset() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	p.partitioned.Store(false)
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		id := p.accepts.Add(1)
		s, err := p.dial(context.Background(), "tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, s, id)
		go p.pipe(s, c, 0)
	}
}

// pipe copies from one end to the other until either closes; id is the
// client connection's number when from is the client, else 0.
func (p *Proxy) pipe(from, to net.Conn, id int64) {
	defer p.wg.Done()
	defer from.Close()
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && id > 0 {
			p.lines.Add(int64(bytes.Count(buf[:n], []byte{'\n'})))
			if p.onData != nil {
				p.onData(id, buf[:n])
			}
		}
		if n > 0 && !p.partitioned.Load() {
			if _, err := to.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Close stops the proxy and closes every connection through it.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
