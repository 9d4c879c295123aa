// Package lock is dflock's public API: distributed locks and semaphores on
// a fleet of dflockd servers, renewed in the background, reported when
// lost.
//
// # Quick start
//
//	c, err := lock.New(lock.Config{Servers: []string{"10.0.0.1:6388", "10.0.0.2:6388"}})
//	if err != nil {
//		return err
//	}
//	defer c.Close() // releases whatever is still held
//
//	// Acquire, run fn, release (also when fn fails or panics).
//	err = c.WithLock(ctx, "orders/42", func(ctx context.Context) error {
//		// Critical section. ctx is cancelled, with cause
//		// lock.ErrLockLost, if the lock is lost meanwhile.
//		return nil
//	})
//	if errors.Is(err, lock.ErrTimeout) {
//		// Not acquired within the acquire timeout.
//	}
//
//	// Or by hand.
//	l := c.Lock("orders/42", lock.AcquireTimeout(5*time.Second))
//	ok, err := l.Acquire(ctx)
//	if err != nil {
//		return err
//	}
//	if ok { // false: not acquired within 5 s
//		// Critical section. l.Lost() closes if the lock is lost.
//		err = l.Release(ctx)
//	}
//
// A [Client] owns the connections to every server (package pool), the
// key-to-server strategy (package shard) and one renewal scheduler for all
// the locks it holds; make one per program and share it. Handles
// ([Lock], [Semaphore]) are cheap. Every setting has a default: a [Config]
// left empty reaches [DefaultServer], a dflockd on this machine, and each
// field's doc names its default; an Acquire waits up to
// [DefaultAcquireTimeout] unless [AcquireTimeout] says otherwise, for a
// lease of the server's length unless [LeaseTTL] does. Servers that need
// TLS or an auth token get them in Config.Pool ([pool.Config]), with the
// other connection settings.
//
// # Coming from the Python client
//
//	async with DistributedLock("k") as lock:      c.WithLock(ctx, "k", func(ctx context.Context) error {...})
//	    print(lock.token)                         or l := c.Lock("k"); l.With(ctx, func(ctx context.Context) error { fmt.Println(l.Token()); ... })
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
//     count against Config.Pool.MaxConns, which bounds the waits in
//     progress at once. A client holding many locks each taken after a
//     wait has one connection per lock; a free key is taken with a
//     pipelined try-lock and needs none.
//   - Connections that hold locks, or a queued Enqueue, are kept talking
//     more often than the server's read timeout. Set
//     Config.Pool.ServerReadTimeout for a server started with another
//     -read-timeout than dflockd's default (23 s,
//     pool.DefaultServerReadTimeout).
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
//     free connection, to within 50 ms whatever the servers do: a server
//     that does not answer is an error naming it (matching
//     pool.ErrNoReply), never a busy key. Timeouts go to the server in
//     whole seconds, rounded up; a context deadline that ends sooner wins
//     on the client side. A try-lock alone (TryAcquire, TryLockMany, an
//     AcquireTimeout of 0) waits Config.ReplicaTimeout for its answer.
//   - A deadline passing is judged against what this process has received,
//     not by the clock alone. When the process is short of CPU, a timer can
//     fire before the goroutine that reads the connection runs; so at a
//     deadline the connection is checked, and an answer already received
//     and not yet read, or a request not yet written, is waited for, up to
//     500 ms more. A stalled server sends nothing and gets none of that. A
//     lease is another matter: one whose renewal is not confirmed by its
//     deadline is lost, however busy the process was.
//   - When a server answers again after a failure (a restart, say), every
//     replica the held locks lack there is taken back at once, in writes
//     of many try-locks, so that a rolling restart does not leave locks on
//     too few servers when the next one goes down.
//
// What still breaks mutual exclusion: when the server closes a holder's
// connection (it crashed, restarted, or dropped it), it may grant the
// lock to the next waiter before the holder has read the close. No client
// can close that window without fencing tokens, which dflockd lacks.
// Replicated locks (below) close it for the fault of one server.
//
// # Many keys at once
//
// [Client.TryLockMany] tries many keys at once and returns the ones it
// took and the ones that were busy: the try-locks of one server go out in
// one write, so 500 keys over 3 servers cost about a round trip per
// server rather than per key ([Client.ReleaseMany] gives them back the
// same way). It suits a scheduler claiming whichever ready tasks are free.
//
// [Client.LockAll] (and [Client.WithLockAll], [Client.SemaphoreAll],
// [Client.WithSemaphoreAll], `dflock run --all`) takes a set of keys all
// or none, as a [Set] that is lost as a whole when any member is. Two
// callers that take overlapping sets in different orders would each hold
// part and wait for the rest; LockAll cannot, because every caller takes
// the keys in one order, their byte order, and never waits for a key while
// holding a later one: it tries every key at once, keeps those before the
// first busy key, gives back those after it, waits for it, and goes on. A
// set that holds keys also never waits for a connection to wait on (the
// waits for its keys might hold them all): it gives its keys back first.
// The order is the keys' alone, not their servers', so clients on either
// side of a fleet change agree on it. Members are ordinary locks
// underneath: renewed by the one scheduler, replicated with
// Config.Replicas, carried through fleet changes. A set lost while it is
// being taken is taken again from the start within the timeout; a set
// lost once held is reported (Lost, Err, OnLost, WithLockAll's context)
// but its other members stay held until Release, so that code still
// running under the set never shares a key it believes it holds.
//
// For semaphores a set takes one slot of each key. Several slots of one
// semaphore are not offered: two callers each holding some of the slots
// they need can wait on each other whatever the order.
//
// # Replicated locks
//
// dflockd keeps its locks in memory: when a server dies or restarts,
// every lock on it is gone, and its keys are unavailable until it comes
// back. With [Config].Replicas = R (odd), a key lives on R servers (see
// [Client.ServersFor]: the strategy's first R for the key, computed alike
// by every client) and a lock on it is held on a quorum of them:
// [Quorum](R, 1) = ⌊R/2⌋+1 for a lock, and for a semaphore of limit L
// the larger Quorum(R, L) that keeps L holders at most (its doc has the
// proof; 3 replicas of a semaphore of 2 need all 3). Every client of a key
// must use the same Replicas and list the same servers.
//
// How it is taken. Acquire sends a try-lock to every replica at once,
// pipelined (one round trip when the key is free), and succeeds as soon
// as it holds a quorum including the key's arbiter: the first replica, in
// the key's order, that answers. A contender that does not get the
// arbiter gives back what it took elsewhere and waits in the arbiter's
// queue only, so two clients that each hold a minority never wait on each
// other, and waiters are served in the arbiter's FIFO order. Its holder
// then takes the other replicas with try-locks until it has a quorum
// (whoever holds them lets go within a round trip). A server that does
// not answer a try-lock within [Config].ReplicaTimeout, or cannot be
// reached, is left out of the next acquires (the next replica
// arbitrates) and gets one request at a time until it answers; a waiter
// whose arbiter dies, stalls or refuses waits (dflockd draining for
// shutdown) starts again on the next replica with what is left of its
// timeout. A client that found a key busy lately asks its arbiter alone
// first, so that contenders do not take the other replicas only to give
// them back. Once held, the
// replicas it lacks, and any it loses later (a server restarted empty, a
// connection dropped), are taken again in the background, so that a
// holder usually holds every replica and the next fault leaves it a
// quorum. Renewals go to every replica held; Release releases them all
// and returns once every replica answered, or a quorum did and the
// others had ReplicaTimeout to (those, a stalled server say, are released
// in the background, best effort). Enqueue and Wait work the same way, with the enqueue on the
// arbiter; WithLock, OnLost, Lost and Err behave as without replicas.
//
// When it is lost. A replica lost while a quorum remains is only logged.
// The lock is lost, and reported as usual, when fewer than a quorum of
// replicas are certainly held: each replica's grant ends as a lone lock's
// does (refused renewal, deadline, broken connection), and the rest are
// given back. Each server issues its own token: Token returns one of
// them, the same while the replica that issued it is held.
//
// What it guarantees, and on what it rests:
//
//   - Servers fail independently, and one that restarts comes back empty
//     (dflockd forgets everything). While at most R−Quorum of a key's
//     servers are down, stalled or cut off, its locks can be taken, and
//     none held on every replica is lost: a lone server's fault never
//     releases a lock anywhere that counts, so the window in which a
//     closed connection lets two clients hold a lone lock is gone.
//   - Each server's clock runs at about the right rate over a lease: the
//     client's deadlines on each replica are counted from its own clock,
//     as for a lone lock.
//   - A holder on a bare quorum (it could not take every replica, say it
//     was taken while a replica was down and others queue on that replica
//     now) loses the lock to one more fault, and in that fault's
//     close-detection window another holder may already hold a quorum.
//     The background re-take keeps such holders rare, not impossible.
//   - Two clients that disagree on which servers are up may pick different
//     arbiters; mutual exclusion still holds (both need a quorum), but one
//     may wait for its timeout.
//
// What still breaks mutual exclusion: a holder paused for longer than its
// lease (a stop-the-world pause, SIGSTOP, a VM migrated) keeps believing
// it holds a lock every server has let go of, and when it resumes it acts
// before any renewal can tell it otherwise. Replication does not help
// there; only fencing tokens checked by the protected resource do, and
// dflockd has none. So do not hold a lock across work that can stall
// longer than the lease without checking Token, or Lost, first.
//
// # Fleet changes
//
// Adding a server to a running fleet, or taking one out, moves keys: a
// client that has switched to the new membership and one that has not
// would route a moving key to different servers and could both hold it.
// [Client.Reconfigure] avoids that with joint routing, as joint
// consensus does: a client in the transition between the old membership
// and the new takes a key whose servers change on its old servers first,
// then on its new ones, and holds it only while it holds both (with
// Replicas, a quorum of each; the servers both have count for both).
// Keys whose servers do not change are taken as before, at no extra cost.
// A change rolls out in two steps, each finished by every client before
// any client starts the next:
//
//  1. every client enters the transition (Reconfigure, or a fleet file
//     that names the new servers and the previous ones);
//  2. every client leaves it (Commit, or the fleet file without the
//     previous servers).
//
// Clients before and in the transition may run together, and so may
// clients in and after it; clients before and after must never. A lock
// held across the change stays held: entering the transition it is also
// taken on its new servers (Reconfigure returns once every held lock has
// been), and leaving it gives back its old servers; it is never released
// in between. A lock being acquired as its client moves is brought to the
// new routing before Acquire returns. [Client.Abort] gives a change up
// before step 2. Removing a server is the same change; a server that is
// already dead is what Replicas is for. [Config].FleetFile and
// [Client.Follow] let clients follow a file the operator edits
// ([Fleet]); `dflock where --plan` lists the keys a change would move.
//
// What it costs: during the transition a moving key is taken on two
// servers (twice the requests for about a quarter of the keys, with
// consistent or rendezvous hashing going from 3 servers to 4; three
// quarters with stable hashing, whose owners mostly move), and each held
// moving lock is taken once more on entering. The strategies that Add
// and Remove servers in place (shard.Consistent, shard.Rendezvous) give
// no such guarantee to running clients: give a client a new strategy
// through Reconfigure instead.
//
// The operator must know when every client has finished a step. A client
// logs each step it takes (at info level, "lock: fleet change"); a fleet
// file is read every FleetWatchInterval, and a step takes up to the
// locks' acquire timeout. Wait for all of them before the next step.
//
// # Metrics, traces and logs
//
// A Client records its metrics through the OpenTelemetry metric API, to
// [Config].MeterProvider or, unset, the global provider (a no-op unless
// the program installed one; the no-op provider of
// go.opentelemetry.io/otel/metric/noop turns recording off). Every
// recording allocates nothing. The instruments, with their attributes
// (server.address is the key's server, or a pool's; dflock.kind is lock
// or semaphore; dflock.client numbers the Clients of a process, so that
// two on one provider report apart):
//
//	dflock.acquire.duration         histogram, s; server, kind, dflock.outcome: acquired, timeout (a TryAcquire that found it busy too), cancelled, error
//	dflock.acquire.queued           histogram, s; server, kind: time a granted wait spent queued on the server
//	dflock.lock.hold.duration       histogram, s; server, kind: acquired to released or lost
//	dflock.renewal.duration         histogram, s; server: round trip of an answered batch of renewals
//	dflock.acquisitions             counter; server, kind
//	dflock.releases                 counter; server, kind
//	dflock.renewals                 counter; server, dflock.result: ok, lost (refused), retried (failed in transit, tried again while the lease lasts)
//	dflock.losses                   counter; server, kind, dflock.cause: connection, refused, deadline (the lease, or the server's read timeout, ran out unconfirmed), quorum, fleet, other
//	dflock.locks.held               gauge; client
//	dflock.enqueues.queued          gauge; client
//	dflock.pool.connections         gauge; client, server, dflock.connection.kind: shared, idle, pinned, parked
//	dflock.pool.requests.in_flight  gauge; client, server
//	dflock.pool.requests            counter; client, server (renewals and keep-alives included)
//	dflock.pool.dials               counter; client, server, dflock.result: ok, failed
//	dflock.pool.connections.broken  counter; client, server
//	dflock.pool.replies.malformed   counter; client, server
//	dflock.pool.write.requests      histogram; server: requests one write carried (scope .../dflock/pool)
//
// No attribute is ever a key or a token. [Config].TracerProvider, when
// set, gives each Acquire, TryAcquire, Enqueue, Wait, Release and
// WithLock a span, and each call on many keys one span (with
// dflock.keys, their number); a set's members are counted in the metrics
// as lone locks are. A lost lock is logged at Error level once per server
// and cause each second (the first with its key, then "N locks lost"),
// and each one at Debug level. `dflock run --metrics-addr` and `dflock
// bench --metrics-addr` serve the metrics as Prometheus text, while they
// run.
package lock
