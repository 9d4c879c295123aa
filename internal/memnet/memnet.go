package memnet

import (
	"context"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
)

// BufferSize is how many bytes each direction of a connection holds
// unread before a write waits for the reader, as a socket's buffers do.
// It is large, so that only a peer that really stops reading holds a
// writer up.
const BufferSize = 4 << 20

// Network is an in-memory network: a set of listeners by address, and the
// connections dialled to them. It is safe for concurrent use. Create it in
// the bubble that uses it.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*listener
	nextPort  int    // the last port given to a listener asking for port 0
	nextLocal uint64 // the last port given to a dialling end
}

// New returns an empty network.
func New() *Network {
	return &Network{listeners: make(map[string]*listener), nextPort: firstPort - 1, nextLocal: firstLocalPort - 1}
}

// Ports that Listen picks for port 0 count up from firstPort, wrapping
// before 65536 and skipping ports in use, so a closed listener's port is
// not handed out again soon. Dialling ends get ports counting up from
// firstLocalPort, never reused, so that an end's address names one
// connection for the network's whole life (a server can be asked about its
// peer by the client's LocalAddr); past 65535 they are not valid TCP ports,
// and need not be.
const (
	firstPort      = 10000
	firstLocalPort = 40000
)

// Listen listens on address, host:port, as net.Listen does. Port 0 picks a
// free port; Addr tells which. An address is free again once its listener
// is closed, so a server can stop and listen again where it was. The
// network name is not checked: a Network has one address space, and takes
// "tcp" so that it stands in for net.Listen.
func (n *Network) Listen(network, address string) (net.Listener, error) {
	host, port, err := splitAddr(address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if port == 0 {
		for range 65535 - firstPort + 1 {
			n.nextPort++
			if n.nextPort > 65535 {
				n.nextPort = firstPort
			}
			if n.listeners[joinAddr(host, n.nextPort)] == nil {
				port = n.nextPort
				break
			}
		}
		if port == 0 {
			return nil, &net.OpError{Op: "listen", Net: network, Err: &os.SyscallError{Syscall: "bind", Err: syscall.EADDRINUSE}}
		}
	}
	a := addr{host: host, port: port}
	if n.listeners[a.String()] != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Addr: a, Err: &os.SyscallError{Syscall: "bind", Err: syscall.EADDRINUSE}}
	}
	l := &listener{n: n, addr: a, done: make(chan struct{})}
	n.listeners[a.String()] = l
	return l, nil
}

// Dial connects to the listener at address (host:port, exactly as the
// listener's Addr spells it, or its port on a listener for all hosts). It
// has the signature of net.Dialer.DialContext. It does not wait for
// Accept, as a TCP dial does not: the connection waits in the listener's
// queue meanwhile. With no listener there, it fails at once with an error
// matching syscall.ECONNREFUSED. ctx is only checked on entry.
func (n *Network) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	refused := &net.OpError{Op: "dial", Net: network, Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	host, port, err := splitAddr(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	n.mu.Lock()
	l := n.listeners[address]
	for _, all := range []string{"", "0.0.0.0", "::"} {
		if l == nil {
			l = n.listeners[joinAddr(all, port)]
		}
	}
	n.nextLocal++
	local := addr{host: host, port: int(n.nextLocal)}
	n.mu.Unlock()
	if l == nil {
		refused.Addr = addr{host: host, port: port}
		return nil, refused
	}
	refused.Addr = l.addr
	client, server := newPair(local, l.addr)
	if !l.enqueue(server) {
		return nil, refused
	}
	return client, nil
}

// listener is a Network's listener: a queue of connections dialled to it
// and not yet accepted.
type listener struct {
	n    *Network
	addr addr
	done chan struct{} // closed by Close

	mu     sync.Mutex
	queue  []*conn
	closed bool
	wait   chan struct{} // closed when a connection is queued; nil when nobody waits
}

func (l *listener) enqueue(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.queue = append(l.queue, c)
	if l.wait != nil {
		close(l.wait)
		l.wait = nil
	}
	return true
}

// Accept waits for the next connection dialled to the listener.
func (l *listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, &net.OpError{Op: "accept", Net: l.addr.Network(), Addr: l.addr, Err: net.ErrClosed}
		}
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return c, nil
		}
		if l.wait == nil {
			l.wait = make(chan struct{})
		}
		wait := l.wait
		l.mu.Unlock()
		select {
		case <-wait:
		case <-l.done:
		}
	}
}

// Close stops listening and frees the address. Connections dialled and not
// yet accepted are closed, as a TCP listener resets those in its backlog;
// accepted ones stay open.
func (l *listener) Close() error {
	l.n.mu.Lock()
	if l.n.listeners[l.addr.String()] == l {
		delete(l.n.listeners, l.addr.String())
	}
	l.n.mu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return &net.OpError{Op: "close", Net: l.addr.Network(), Addr: l.addr, Err: net.ErrClosed}
	}
	l.closed = true
	close(l.done)
	queued := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, c := range queued {
		c.Close()
	}
	return nil
}

// Addr is the address the listener listens on, its port picked if it
// asked for 0.
func (l *listener) Addr() net.Addr { return l.addr }

// addr is a memnet address: host:port, as TCP spells it.
type addr struct {
	host string
	port int
}

// Network is "memnet": code that logs it shows the connection was not TCP.
func (a addr) Network() string { return "memnet" }
func (a addr) String() string  { return joinAddr(a.host, a.port) }

func joinAddr(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

func splitAddr(address string) (string, int, error) {
	host, p, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, &net.AddrError{Err: "invalid port", Addr: address}
	}
	return host, port, nil
}
