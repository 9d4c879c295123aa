// Package pool keeps the connections to one dflockd server.
//
// A lock belongs to the connection that took it: closing that connection
// releases the lock. Each lock the server grants is a [Grant], from the
// reply that grants it to its release or loss; everything that happens to
// it (a renewal confirmed or refused, its release, its connection
// breaking, its deadline passing) applies to that object alone. The pool
//
//   - never closes a connection that holds a lock (for idleness or
//     anything else) and keeps such a connection, and one pinned by a
//     queued enqueue, talking more often than the server's read timeout;
//   - reports each grant held through a connection that breaks, at once
//     ([Grant.OnLost]);
//   - runs blocking requests (a lock with a timeout, a wait) and stats
//     only on clean exclusive connections, which hold no lock, so giving
//     one up costs nothing else. A connection that holds locks stays out
//     of the pool until they end;
//   - releases any grant whose caller gave up. The protocol cannot
//     cancel a wait, and dflockd keeps a wait queued even after its
//     connection closes, so a connection whose wait was given up is kept
//     until the server answers (see [Pinned]).
//
// Non-blocking requests (try-locks, releases, renewals) from any number
// of goroutines share a few connections and are pipelined: queued by the
// callers, written together by the connection's writer goroutine,
// answered in order. A caller never waits on a socket, so its context is
// honoured even against a peer that stopped reading.
//
// A caller that asks many servers at once (a replicated lock, a key that
// moves between servers) sends each request with [Pool.Send] (a release
// with [Grant.StartRelease]) and takes the answers with [Call.Await], in
// turn, or as they come when [Call.Notify] tells it on one channel: no
// goroutine per request. One that holds many grants hears of their loss
// through one [LossListener] ([Grant.Listen]), with no closure per grant.
//
//	p, err := pool.New("127.0.0.1:6388", pool.Config{})
//	res, err := p.Do(ctx, &wire.Request{Cmd: wire.CmdLock, Key: "orders", Timeout: 10})
//	if err == nil && res.Resp.Err() == nil {
//		res.Grant.OnLost(func(err error) { /* the lock is gone */ })
//		defer res.Grant.Release(ctx)
//	}
package pool
