package lock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
	"github.com/dflock-go/dflock/wire"
)

// The defaults of Config's fields, used where a field is zero.
const (
	// DefaultServer is the server of a Config that names none: a dflockd
	// on this machine, on its default port.
	DefaultServer             = "127.0.0.1:6388"
	DefaultReplicaTimeout     = 500 * time.Millisecond
	DefaultFleetWatchInterval = time.Second
	DefaultCloseTimeout       = 5 * time.Second
)

// Config configures a Client. The zero value of each field is its
// documented default.
type Config struct {
	// Servers lists the fleet, host:port each. Default: DefaultServer
	// (127.0.0.1:6388) alone. With the default strategy the order is part
	// of where keys live: list the servers in the same order in every
	// client (Python, TypeScript and Go alike).
	Servers []string
	// Strategy maps keys to servers. Default shard.StableHash over
	// Servers, which agrees with the other dflockd clients. When set,
	// Servers may be left empty: the strategy's servers are used. A
	// *shard.Transition starts the client in the middle of a fleet change
	// (see Client.Reconfigure).
	Strategy shard.Strategy
	// Pool configures the connections to each server (see pool.Config):
	// TLS and AuthToken for servers that need them, the most connections
	// per server, timeouts, keep-alive, and ServerReadTimeout, which must
	// match a server started with a non-default -read-timeout. Leave its
	// Logger and MeterProvider unset: the connections report to the
	// client's (Logger and MeterProvider below).
	Pool pool.Config
	// Logger receives lost locks and connection events, with keys and
	// servers but never tokens or the auth token. Nil logs through
	// slog.Default() (by default its Info level and above: lost locks,
	// servers that cannot be reached, fleet changes), each kind
	// throttled per server (losses counted into one line a second);
	// slog.New(slog.DiscardHandler) silences them.
	Logger *slog.Logger
	// Replicas places every key on this many servers (odd; default 1):
	// the key's server and the next ones the strategy prefers (see
	// shard.Replicas). A lock is taken on a quorum of them and holds
	// while a quorum does, so it survives the loss of a minority of its
	// servers; see "Replicated locks" in the package documentation. A
	// semaphore needs more of them (Quorum): with 3 replicas, a semaphore
	// of 2 slots or more needs all 3 and survives no server. Every client
	// of a key must use the same Replicas and the same servers.
	Replicas int
	// ReplicaTimeout bounds the wait for one replica's answer to a
	// try-lock, after which the acquire goes on without that replica (a
	// stalled server). It is also how long a try-lock alone (TryAcquire,
	// TryLockMany, an AcquireTimeout of 0) waits for any server's answer
	// before it fails with an error matching pool.ErrNoReply, with or
	// without replicas: it has no timeout of its own to wait to. Default
	// DefaultReplicaTimeout (500 ms).
	ReplicaTimeout time.Duration
	// FleetFile, when set, names a fleet file (see Fleet) that gives the
	// servers in place of Servers and Strategy, which must then be
	// empty. The client reads it every FleetWatchInterval (default
	// DefaultFleetWatchInterval, 1 s) until Close, and follows each
	// change (see Client.Follow): this is how a fleet of clients goes
	// through a change (Client.Reconfigure) without a restart.
	FleetFile string
	// FleetWatchInterval is how often the fleet file is read.
	FleetWatchInterval time.Duration
	// CloseTimeout bounds the releases and withdrawals the client sends
	// with no caller's context to end them: those of Client.Close,
	// Lock.Close and the end of WithLock and WithLockAll, and those it
	// finishes in the background (a stalled replica's release, the old
	// servers given back in a fleet change). A server that has not
	// answered by then lets go of the lock when the connection closes or
	// the lease runs out. Default DefaultCloseTimeout (5 s). A program
	// that must exit within a deadline keeps Client.Close within it with
	// this.
	CloseTimeout time.Duration
	// MeterProvider receives the client's metrics (see "Metrics" in the
	// package documentation). Nil means OpenTelemetry's global provider,
	// which discards them unless the program installed one. The no-op
	// provider of go.opentelemetry.io/otel/metric/noop turns the
	// recording off altogether.
	MeterProvider metric.MeterProvider
	// TracerProvider, when set, gets a span for every Acquire,
	// TryAcquire, Enqueue, Wait, Release and WithLock, with the key's
	// server, the kind and the outcome (never the key), and for every call
	// on many keys (TryLockMany, LockAll, WithLockAll, ReleaseMany, a
	// Set's Release...), with the number of keys. Unset, nothing is
	// traced, at no cost.
	TracerProvider trace.TracerProvider
}

// Client holds the connections to a fleet and renews every lock taken
// through it. It is safe for concurrent use. Close it to release
// everything it holds.
type Client struct {
	route          atomic.Pointer[routing] // where keys are taken; replaced whole by a fleet change
	moveMu         sync.Mutex              // serialises fleet changes
	poolCfg        pool.Config
	log            *slog.Logger
	renewer        *renewer
	retakes        *retakeClock // the holders' background re-takes
	closeTimeout   time.Duration
	replicas       int           // Config.Replicas, at least 1
	replicaTimeout time.Duration // Config.ReplicaTimeout
	contention     *recentSet    // keys found taken lately
	slow           *slowServers  // servers that did not answer a try-lock in time lately
	metrics        *metrics
	tracer         trace.Tracer // nil without Config.TracerProvider
	losses         *lossLog     // logs losses, a line per server and cause
	// lossHook (tests) runs on every reported loss, with the lock's mutex
	// held and before its Lost channel closes.
	lossHook func(r lossReport, err error)
	// tasks owns the goroutines the client starts (see tasks).
	tasks *tasks
	// stopWatch ends the fleet file's watcher, which closes watchDone;
	// nil without a fleet file.
	stopWatch context.CancelFunc
	watchDone chan struct{}

	// mu guards the fields below. Lock order: Client.mu before Lock.mu.
	mu     sync.RWMutex
	pools  map[string]*pool.Pool
	active map[*Lock]struct{} // handles queued or held, for Close
	closed bool               // Close has begun: nothing new is tracked
}

// New returns a client for the fleet. It connects lazily.
func New(cfg Config) (*Client, error) {
	strategy, fleetFile, err := fleetOf(cfg)
	if err != nil {
		return nil, err
	}
	pc, log, err := connConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{
		poolCfg:        pc,
		log:            log,
		closeTimeout:   cmp.Or(cfg.CloseTimeout, DefaultCloseTimeout),
		replicaTimeout: cmp.Or(cfg.ReplicaTimeout, DefaultReplicaTimeout),
		pools:          map[string]*pool.Pool{},
		active:         map[*Lock]struct{}{},
		lossHook:       func(lossReport, error) {},
		contention:     newRecentSet(),
		slow:           &slowServers{},
	}
	switch {
	case c.replicaTimeout < 0:
		return nil, invalid("ReplicaTimeout %v must not be negative", cfg.ReplicaTimeout)
	case c.closeTimeout < 0:
		return nil, invalid("CloseTimeout %v must not be negative", cfg.CloseTimeout)
	}
	if c.replicas, err = checkReplicas(cfg.Replicas, strategy); err != nil {
		return nil, err
	}
	c.route.Store(newRouting(strategy))
	for _, addr := range strategy.Servers() {
		if _, err := c.addPool(addr); err != nil {
			c.closePools()
			return nil, err
		}
	}
	if c.metrics, err = newMetrics(cfg.MeterProvider, c); err != nil {
		c.closePools()
		return nil, fmt.Errorf("lock: metrics: %w", err)
	}
	c.losses = newLossLog(c)
	if cfg.TracerProvider != nil {
		c.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	// Started last: nothing above can fail once a goroutine runs.
	c.tasks = newTasks()
	c.retakes = newRetakeClock(c.tasks)
	c.renewer = newRenewer(c)
	if cfg.FleetFile != "" {
		var ctx context.Context
		ctx, c.stopWatch = context.WithCancel(c.tasks.ctx)
		c.watchDone = make(chan struct{})
		every := cmp.Or(cfg.FleetWatchInterval, DefaultFleetWatchInterval)
		c.tasks.goFn(func() { c.watchFleet(ctx, cfg.FleetFile, every, fleetFile) })
	}
	return c, nil
}

// fleetOf is the strategy cfg gives, from its fleet file (whose content
// it returns too), its Strategy, or its Servers (default DefaultServer),
// which must not contradict each other.
func fleetOf(cfg Config) (strategy shard.Strategy, fleetFile []byte, err error) {
	strategy = cfg.Strategy
	if cfg.FleetFile != "" {
		if strategy != nil || cfg.Servers != nil {
			return nil, nil, invalid("FleetFile gives the servers: leave Servers and Strategy empty")
		}
		if cfg.FleetWatchInterval < 0 {
			return nil, nil, invalid("FleetWatchInterval %v must not be negative", cfg.FleetWatchInterval)
		}
		if fleetFile, err = os.ReadFile(cfg.FleetFile); err != nil {
			return nil, nil, fmt.Errorf("lock: reading the fleet file: %w", err)
		}
		f, err := parseFleet(fleetFile, cfg.FleetFile)
		if err != nil {
			return nil, nil, err
		}
		if strategy, err = f.Build(); err != nil {
			return nil, nil, err
		}
	}
	if strategy != nil && cfg.Servers != nil && !sameServers(cfg.Servers, strategy.Servers()) {
		return nil, nil, invalid("Servers %v and Strategy's servers %v differ: give one of them", cfg.Servers, strategy.Servers())
	}
	if strategy == nil {
		servers := cfg.Servers
		if len(servers) == 0 {
			servers = []string{DefaultServer}
		}
		if strategy, err = shard.NewStableHash(servers); err != nil {
			return nil, nil, err
		}
	}
	return strategy, fleetFile, nil
}

// connConfig is the pool configuration of cfg's connections, with the
// client's logger (which it returns too) and meter provider.
func connConfig(cfg Config) (pool.Config, *slog.Logger, error) {
	pc := cfg.Pool
	switch {
	case pc.Logger != nil:
		return pc, nil, invalid("Pool.Logger is set: set Config.Logger, which the client gives its connections")
	case pc.MeterProvider != nil:
		return pc, nil, invalid("Pool.MeterProvider is set: set Config.MeterProvider, which the client gives its connections")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	pc.Logger = log
	if mp := cfg.MeterProvider; mp == nil {
		pc.MeterProvider = otel.GetMeterProvider()
	} else if _, off := mp.(noop.MeterProvider); !off {
		pc.MeterProvider = mp
	}
	return pc, log, nil
}

// sameServers reports whether a and b list the same servers, in any
// order.
func sameServers(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(s string) bool { return !slices.Contains(b, s) })
}

// checkReplicas validates Config.Replicas against the strategy: an odd
// number, at most the servers it has, and a strategy that can place
// replicas. A transition must suit both of its memberships.
func checkReplicas(n int, s shard.Strategy) (int, error) {
	if n == 0 {
		n = 1
	}
	if t, ok := s.(*shard.Transition); ok {
		if _, err := checkReplicas(n, t.From()); err != nil {
			return 0, err
		}
		s = t.To()
	}
	switch _, ok := s.(shard.Replicator); {
	case n < 0:
		return 0, invalid("Replicas %d: at least 1", n)
	case n%2 == 0:
		return 0, invalid("Replicas %d must be odd (1, 3, 5...): an even number tolerates no more lost servers than the odd number below it", n)
	case n > 1 && !ok:
		return 0, invalid("Replicas %d needs a strategy that can place replicas (shard.Replicator); %T cannot", n, s)
	case n > len(s.Servers()):
		return 0, invalid("Replicas %d needs at least %d servers; the fleet has %d", n, n, len(s.Servers()))
	}
	return n, nil
}

func (c *Client) addPool(addr string) (*pool.Pool, error) {
	p, err := pool.New(addr, c.withOnReturn(c.poolCfg, addr))
	if err != nil {
		return nil, err
	}
	c.pools[addr] = p
	return p, nil
}

// poolAt returns the pool for addr, making one for a server that joined an
// elastic strategy after New.
func (c *Client) poolAt(addr string) (*pool.Pool, error) {
	c.mu.RLock()
	p, closed := c.pools[addr], c.closed
	c.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if p != nil {
		return p, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.pools[addr]; p != nil {
		return p, nil
	}
	return c.addPool(addr)
}

// ServerFor returns the address of the server that owns key; during a
// transition, its owner in the new membership.
func (c *Client) ServerFor(key string) (string, error) { return c.route.Load().strategy.Server(key) }

// ServersFor returns the servers key lives on: its Config.Replicas
// replicas, ServerFor(key) first; during a transition, in the new
// membership (RoutesFor gives both).
func (c *Client) ServersFor(key string) ([]string, error) {
	return shard.Replicas(c.route.Load().strategy, key, c.replicas)
}

// RoutesFor returns where a lock on key is taken, in order: its servers
// (ServersFor), or during a transition, for a key whose servers change,
// its servers in the old membership, then in the new.
func (c *Client) RoutesFor(key string) ([][]string, error) {
	return c.route.Load().routes(key, c.replicas)
}

// track adds a handle that is becoming queued or held to the set Close
// settles; false once Close has begun.
func (c *Client) track(l *Lock) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.active[l] = struct{}{}
	return true
}

// untrack removes a handle that is no longer queued or held.
func (c *Client) untrack(l *Lock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.active, l)
}

// Lock returns a handle on the lock named key. Nothing is sent until it is
// acquired; an invalid key or option is reported then.
func (c *Client) Lock(key string, opts ...Option) *Lock {
	return newLock(c, key, 0, opts)
}

// Semaphore returns a handle on one slot of the semaphore named key with
// limit slots. With Config.Replicas, a slot is held on Quorum(Replicas,
// limit) replicas, more than a lock's majority: 3 replicas keep a
// semaphore of 2 or more slots only while all 3 servers are up; 5 keep
// one of 2 slots through the loss of one.
func (c *Client) Semaphore(key string, limit int, opts ...Option) *Semaphore {
	s := &Semaphore{newLock(c, key, limit, opts)}
	if limit <= 0 && s.err == nil {
		s.err = invalid("semaphore limit %d must be positive", limit)
	}
	return s
}

// WithLock runs fn while holding the lock named key: it acquires (up to
// the acquire timeout, returning ErrTimeout if that passes), runs fn, and
// releases when fn returns, fails or panics. The context fn gets is
// cancelled, with context.Cause ErrLockLost, if the lock is lost while fn
// runs. fn's error is returned; if the lock was lost meanwhile, the
// returned error also matches ErrLockLost, even when fn returned nil. A
// release that fails at the end (a server that does not answer within
// Config.CloseTimeout) is logged, not returned: fn's work is done. For
// the handle inside fn (its token, lease, servers), use Lock.With.
func (c *Client) WithLock(ctx context.Context, key string, fn func(ctx context.Context) error, opts ...Option) error {
	if fn == nil {
		return invalid("WithLock of a nil function")
	}
	l := c.Lock(key, opts...)
	ctx, end := l.span(ctx, "dflock.WithLock")
	err := l.run(ctx, fn)
	end("", err)
	return err
}

// WithSemaphore is WithLock for one slot of a semaphore.
func (c *Client) WithSemaphore(ctx context.Context, key string, limit int, fn func(ctx context.Context) error, opts ...Option) error {
	if fn == nil {
		return invalid("WithSemaphore of a nil function")
	}
	return c.Semaphore(key, limit, opts...).run(ctx, fn)
}

// With runs fn while holding l, as Client.WithLock does: it acquires
// (returning ErrTimeout if the acquire timeout passes), runs fn, and
// releases when fn returns, fails or panics; fn's context is cancelled,
// with cause ErrLockLost, if the lock is lost meanwhile. fn reaches the
// handle as l, for its token, lease or servers, and l stays usable
// afterwards (WithLock's handle is retired).
func (l *Lock) With(ctx context.Context, fn func(ctx context.Context) error) error {
	if fn == nil {
		return invalid("With of a nil function")
	}
	ctx, end := l.span(ctx, "dflock.With")
	err := l.runAs(ctx, keptLock{l}, fn)
	end("", err)
	return err
}

// run is With for a handle of its own, retired at the end.
func (l *Lock) run(ctx context.Context, fn func(ctx context.Context) error) error {
	return l.runAs(ctx, l, fn)
}

// runAs acquires l and runs fn under it, h ending it.
func (l *Lock) runAs(ctx context.Context, h holding, fn func(ctx context.Context) error) error {
	ok, err := l.Acquire(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %q not acquired within %v", ErrTimeout, l.key, l.opt.acquireTimeout)
	}
	return runHeld(ctx, h, fn)
}

// keptLock is a Lock under Lock.With, which releases it at the end but
// keeps the handle.
type keptLock struct{ *Lock }

func (k keptLock) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), k.c.closeTimeout)
	defer cancel()
	// A loss is fn's caller's to hear, from runHeld.
	if err := k.Release(ctx); err != nil && !errors.Is(err, ErrNotHeld) && !errors.Is(err, ErrLockLost) {
		k.c.log.Warn("lock: release after With", "key", k.key, "err", err)
	}
}

func (l *Lock) watch(cancel context.CancelCauseFunc) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancel = cancel
	return l.state != stateHeld
}

func (l *Lock) lossErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != stateLost {
		return nil
	}
	return l.lostErr
}

func (l *Lock) finish() {
	if err := l.Close(); err != nil {
		l.c.log.Warn("lock: release after WithLock", "key", l.key, "err", err)
	}
}

// ServerStats is one server's answer to stats.
type ServerStats struct {
	// Addr is the server's address; Stats its answer, when Err is nil.
	Addr  string
	Stats wire.Stats
	Err   error
}

// DefaultStatsTimeout bounds Client.Stats when its context has no
// deadline.
const DefaultStatsTimeout = 10 * time.Second

// Stats asks every server of the fleet for its state. Each request runs on
// an exclusive connection that holds no lock (a reply lists everything the
// server tracks, megabytes on a busy server), so it waits for one when all
// are taken; with no deadline in ctx it gives up after
// DefaultStatsTimeout (10 s).
func (c *Client) Stats(ctx context.Context) []ServerStats {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStatsTimeout)
		defer cancel()
	}
	addrs := c.route.Load().strategy.Servers()
	out := make([]ServerStats, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = ServerStats{Addr: addr}
			p, err := c.poolAt(addr)
			if err != nil {
				out[i].Err = err
				return
			}
			res, err := p.Do(ctx, &wire.Request{Cmd: wire.CmdStats})
			if err == nil {
				err = res.Resp.Err()
			}
			if err == nil {
				out[i].Stats, err = wire.ParseStats(res.Resp.Body)
			}
			out[i].Err = err
		}()
	}
	wg.Wait()
	return out
}

// PoolStats returns each server's connection statistics.
func (c *Client) PoolStats() []pool.Stats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]pool.Stats, 0, len(c.pools))
	for _, p := range c.pools {
		out = append(out, p.Stats())
	}
	return out
}

// SlowMarks returns, by server address, how many times the client found
// a server too slow or unreachable: a try-lock, release or ping not
// answered within Config.ReplicaTimeout, or a connection to it broken or
// refused (a server down counts once per request that found it so). An
// acquire then goes on without waiting for that server until it answers
// again. Servers never found slow are left out: a
// healthy fleet gives an empty map, also when this process is short of
// CPU (an answer that arrived while it was is not the server's delay).
func (c *Client) SlowMarks() map[string]uint64 { return c.slow.counts() }

// RenewalsSent counts the renewals the client has sent.
func (c *Client) RenewalsSent() uint64 { return c.renewer.sent.Load() }

// isClosed reports whether Close has begun.
func (c *Client) isClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed
}

// Close releases every lock the client holds, withdraws pending
// enqueues, stops renewing and closes its connections (which releases, on
// the server, anything a release could not reach). It waits for the
// releases' answers up to Config.CloseTimeout. An Acquire still in
// flight returns an error matching ErrClosed; a try-lock answered while
// Close runs is released before the connections close (Close waits for
// the answers in flight, giving up on a server silent for 50 ms), so that
// a server started with -auto-release-on-disconnect=false is left
// holding nothing. Renewals in flight end at once. Safe to call twice.
//
// Code still running under a lock or set the client held is told that it
// no longer holds it, since another client can take it at once: Lost
// closes, and Err, the cause of WithLock's context and WithLock's result
// match both ErrLockLost and ErrClosed. It is not a loss: OnLost does not
// run, and nothing is logged or counted as lost.
//
// The protocol cannot cancel a wait, and dflockd does not notice that a
// waiting connection closed: a wait in flight at Close (or given up
// shortly before, see pool.Pinned) keeps its place until its timeout, and
// a lock granted to it then is released when the server next reads the
// closed connection, or, on a server with -auto-release-on-disconnect
// =false, only when its lease runs out.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	active := make([]*Lock, 0, len(c.active))
	for l := range c.active {
		active = append(active, l)
	}
	clear(c.active)
	c.mu.Unlock()
	if c.stopWatch != nil {
		// A fleet change under way ends (what it could not finish is
		// released below, not reported lost), and none starts.
		c.stopWatch()
		<-c.watchDone
	}

	ctx, cancel := context.WithTimeout(context.Background(), c.closeTimeout)
	defer cancel()
	batches := map[*pool.Pool][]*pool.Grant{}
	// Re-takes and arbiter watches stop; what they hold is released
	// below.
	c.tasks.cancel()
	for _, l := range active {
		// Pinned connections must go back before the pools can close.
		l.withdraw()
		gone := l.revoke()
		for _, g := range gone.grants {
			p := g.Pool()
			batches[p] = append(batches[p], g)
		}
	}
	var wg sync.WaitGroup
	for p, gs := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.ReleaseAll(ctx, gs)
		}()
	}
	wg.Wait()
	c.renewer.close()
	// A try-lock answered after Close began is given up by its taker,
	// and its release must reach the server before the connections
	// close (see pool.Pool.Drain).
	c.drainPools(ctx)
	// Closed pools fail the requests still in flight: the client's
	// goroutines waiting on them end, and Close waits for them all.
	c.closePools()
	c.tasks.close()
	c.losses.close()
	if err := c.metrics.reg.Unregister(); err != nil {
		c.log.Debug("lock: unregistering the metrics callback", "err", err)
	}
	return nil
}

// drainPools drains every pool at once, until ctx ends.
func (c *Client) drainPools(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range c.poolList() {
		wg.Go(func() { p.Drain(ctx) })
	}
	wg.Wait()
}

func (c *Client) closePools() {
	for _, p := range c.poolList() {
		p.Close()
	}
}

// poolList returns the client's pools, one per server.
func (c *Client) poolList() []*pool.Pool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	pools := make([]*pool.Pool, 0, len(c.pools))
	for _, p := range c.pools {
		pools = append(pools, p)
	}
	return pools
}
