// Package fakeserver is an in-memory dflockd for tests and benchmarks.
//
// It speaks the real server's protocol on real TCP (or TLS), or on any
// listener [Config.Listen] opens: an in-memory one lets a test run server
// and client in a testing/synctest bubble, where leases and timeouts run
// on a virtual clock. It reproduces the real server's behaviour (dflockd
// 1.10, checked request by request against the real binary): strict FIFO
// grants, leases with a periodic sweep and eviction on touch, ownership
// per connection with release on disconnect, two-phase enqueue/wait,
// semaphores sharing the key space with locks, max-locks, max-waiters,
// max-connections, the read timeout, auth, the stats document and
// graceful shutdown. It also reproduces the real server's less obvious
// ways: it does not read a connection while handling a request on it, so a
// client closing its end does not cancel a blocked wait (the wait runs to
// its timeout or grant, and only then is the close noticed and what the
// connection holds released); numbers are any int64, converted to
// durations as the real server converts them. Replies to pipelined
// requests are written in batches, so the fake is not the bottleneck of a
// client benchmark.
//
// Tests use its fault hooks: [Server.DropConnections], [Server.Stall],
// [Server.RefuseConnections], [Server.Stop] and [Server.Restart],
// [Server.ExpireNow]. [Server.TokenState] is the oracle for false losses:
// whether the server still holds a token, for how long, and whether a fault
// since its grant may excuse a client for giving it up; [Server.FaultCount]
// and [Server.ReadTimeoutCloses] count the faults injected and the
// connections closed for the read timeout.
//
//	srv, err := fakeserver.Start(fakeserver.Config{}) // 127.0.0.1, free port
//	if err != nil { ... }
//	defer srv.Close()
//	conn, err := net.Dial("tcp", srv.Addr())
package fakeserver
