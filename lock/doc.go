// Package lock is dflock's public API: distributed locks and semaphores on
// a fleet of dflockd servers, renewed in the background, reported when
// lost.
//
// A [Client] owns the connections to every server (package pool), the
// key-to-server strategy (package shard) and one renewal scheduler for all
// the locks it holds. Handles ([Lock], [Semaphore]) are cheap.
//
// # Coming from the Python client
//
//	async with DistributedLock("k") as lock:      c.WithLock(ctx, "k", func(ctx context.Context) error {...})
//	lock = DistributedLock("k", ...)              l := c.Lock("k", opts...)
//	await lock.acquire()  (False on timeout)      ok, err := l.Acquire(ctx)  (false, nil on timeout)
//	await lock.release()                          l.Release(ctx)
//	await lock.aclose()                           l.Close()  (and c.Close() for everything)
//	lock.token / lock.lease                       l.Token() / l.Lease()
//	await lock.enqueue()  ("acquired"/"queued")   l.Enqueue(ctx)  (lock.Acquired / lock.Queued)
//	await lock.wait(timeout_s=10)                 l.Wait(ctx, 10*time.Second)
//	acquire_timeout_s=10                          lock.AcquireTimeout(10*time.Second)
//	lease_ttl_s=30                                lock.LeaseTTL(30*time.Second)
//	renew_ratio=0.5                               lock.RenewRatio(0.5)
//	servers=[("h", 6388)]                         lock.Config{Servers: []string{"h:6388"}}
//	sharding_strategy=stable_hash_shard           the default (shard.StableHash); shard.NewFunc for your own
//	acquire/release/renew/enqueue/wait(r, w, ...) lock.NewConn(netConn).Acquire/Release/Renew/Enqueue/Wait
//
// What it adds: semaphores ([Client.Semaphore], [Client.WithSemaphore]);
// a [Lock.Lost] channel and an [OnLost] callback; a context in WithLock
// that is cancelled, with cause [ErrLockLost], when the lock is lost;
// errors that tell a timeout ([ErrTimeout]) from a cancelled context;
// pooled, pipelined connections; and per-server [Client.Stats].
//
// # Guarantees
//
//   - Renewals resend the lease the lock holds (a renew without one would
//     reset it to the server's default).
//   - Time is counted as the server counts it. The server starts a lease
//     when it grants, and a renewal's from when it handles it; the client
//     counts each from when the request that obtained it was sent, which
//     is never later. The server also releases a connection's locks if
//     that connection sends nothing for its read timeout (a clock that
//     restarts at each reply and stops while it handles a blocking
//     request); the client counts that from the last request answered on
//     the connection. A lock is claimed until the sooner of the two, less
//     a margin, and lost at that moment if nothing confirmed it: so the
//     holder gives up before the server could hand the lock on, in a
//     partition too.
//   - A grant that arrives after a wait (its lease and the server's clock
//     began at an instant the client cannot see) is confirmed by a
//     renewal on its own connection before Acquire or Wait returns, rather
//     than reported lost on arrival. Wait always confirms, because dflockd
//     answers a wait with the token of an earlier grant even after that
//     grant's lease ran out.
//   - A blocking request (an Acquire that waits, a Wait, and stats, whose
//     reply can be megabytes) runs only on a connection that holds no
//     lock, so cancelling it (which closes that connection: the protocol
//     has no other way) never costs another lock. A lock granted after a
//     wait keeps its connection to itself until it is released: such a
//     connection serves no other blocking request meanwhile, and does not
//     count against pool.Config.MaxConns, which bounds the waits in
//     progress at once. A client holding many locks each taken after a
//     wait has one connection per lock; a free key is taken with a
//     pipelined try-lock and needs none.
//   - Connections that hold locks, or a queued Enqueue, are kept talking
//     more often than the server's read timeout. Set
//     pool.Config.ServerReadTimeout for a server started with another
//     -read-timeout than 23 s.
//   - A lost lock is reported, never hidden: Token turns "", Lost closes,
//     the OnLost callback runs once, WithLock's context is cancelled, and
//     an error is logged with the key and the server (never the token).
//     That happens when a renewal is refused, when the lease or the
//     connection's read timeout runs out unconfirmed, and at once when the
//     connection that holds the lock breaks. Only the grant an answer was
//     sent for is affected: a renewal refused for an earlier acquisition
//     never touches the current one.
//   - A grant that arrives after its caller gave up is released at once.
//   - AcquireTimeout bounds the whole acquire, including the wait for a
//     free connection. Timeouts go to the server in whole seconds, rounded
//     up; a context deadline that ends sooner wins on the client side.
//
// What still breaks mutual exclusion: when the server closes a holder's
// connection (it crashed, restarted, or dropped it), it may grant the
// lock to the next waiter before the holder has read the close. No client
// can close that window without fencing tokens, which dflockd lacks.
package lock
