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
//   - The client never claims a lock past the lease the server last
//     confirmed, measured from when the confirming request was sent: if no
//     renewal is confirmed by then, [Lock.Token] turns "" at that moment
//     and the lock is lost.
//   - A lost lock is reported, never hidden: Token turns "", Lost closes,
//     the OnLost callback runs once, WithLock's context is cancelled, and
//     an error is logged with the key and the server (never the token).
//     That happens when a renewal is refused, when the lease runs out, and
//     at once when the connection that holds the lock breaks.
//   - A grant that arrives after its caller gave up is released at once;
//     cancelling an acquire never releases other locks.
//   - Timeouts go to the server in whole seconds, rounded up; a context
//     deadline that ends sooner wins on the client side.
package lock
