// Package pool keeps the connections to one dflockd server.
//
// A lock belongs to the connection that took it: closing that connection
// releases the lock. So the pool
//
//   - never closes a connection that holds a lock (for idleness or
//     anything else) and keeps such a connection talking more often than
//     the server's read timeout;
//   - reports each lock held through a connection that breaks, at once,
//     through its [Hold];
//   - cancels a blocking request without costing other locks: a waiting
//     connection that holds nothing is closed, one that holds locks lets
//     the wait run out and releases whatever it grants;
//   - releases any grant whose caller gave up.
//
// Non-blocking requests (try-locks, releases, renewals, stats) from any
// number of goroutines share a few connections and are pipelined: written
// together, answered in order. Blocking requests (a lock with a timeout, a
// wait) take an exclusive connection from a puddle pool, as do two-phase
// acquires, which must send enqueue and wait on one connection ([Pin]).
//
//	p, err := pool.New("127.0.0.1:6388", pool.Config{})
//	res, err := p.Do(ctx, &wire.Request{Cmd: wire.CmdLock, Key: "orders", Timeout: 10})
//	if err == nil && res.Resp.Err() == nil {
//		res.Hold.OnLost(func(err error) { /* the lock is gone */ })
//	}
package pool
