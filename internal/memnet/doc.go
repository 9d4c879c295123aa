// Package memnet is an in-memory network for tests and benchmarks, made
// for Go's testing/synctest bubbles.
//
// A real socket cannot be used in a bubble: a goroutine blocked on network
// I/O is not "durably blocked", so the bubble's clock never advances while
// one waits. net.Pipe is in-memory but synchronous: a write waits for the
// peer's read, which is not how a TCP client and server talk (a server
// answering a client that has stopped reading does not wait). A memnet
// connection behaves like a TCP one instead: a write copies into the
// peer's receive buffer and returns at once (it waits only when that
// buffer is full, at [BufferSize]); a read waits on a channel until bytes
// arrive, the peer closes, or its deadline passes. Deadlines run on
// timers, so in a bubble they run on the bubble's virtual clock; their
// errors match [os.ErrDeadlineExceeded] and are [net.Error] timeouts. A
// dial to an address nobody listens on is refused with an error matching
// syscall.ECONNREFUSED, as a TCP dial to a closed port is.
//
// The shortest use, with a fakeserver and a pool, inside a bubble:
//
//	synctest.Test(t, func(t *testing.T) {
//		nw := memnet.New()
//		srv, _ := fakeserver.Start(fakeserver.Config{Listen: nw.Listen})
//		defer srv.Close()
//		p, _ := pool.New(srv.Addr(), pool.Config{Dial: nw.Dial})
//		defer p.Close()
//		// ... a 30 s lease runs out in microseconds of real time.
//	})
//
// Create a Network inside the bubble that uses it, and use it only there:
// its listeners, connections and deadlines make channels and timers,
// which belong to the bubble they are made in (one made outside would not
// block durably; touching one from another bubble panics). Outside any
// bubble memnet works as an ordinary in-memory network on the real clock.
//
// What memnet does not model: packet loss, latency, and the reset a TCP
// peer sends when closed with unread data (the other end still reads
// what was sent, then io.EOF).
package memnet
