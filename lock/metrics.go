package lock

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/dflock-go/dflock/pool"
)

// meterName is the instrumentation scope of every instrument.
const meterName = "github.com/dflock-go/dflock/lock"

// Attribute keys. Never a key or a token: both are unbounded, and tokens
// are secrets.
const (
	attrServer  = attribute.Key("server.address")
	attrKind    = attribute.Key("dflock.kind")
	attrOutcome = attribute.Key("dflock.outcome")
	attrResult  = attribute.Key("dflock.result")
	attrCause   = attribute.Key("dflock.cause")
	attrConn    = attribute.Key("dflock.connection.kind")
	attrClient  = attribute.Key("dflock.client")
)

// clientIDs numbers the Clients of the process, for the attribute that
// keeps the gauges of two Clients on one MeterProvider apart.
var clientIDs atomic.Int64

// The outcomes of an acquire.
const (
	outcomeAcquired  = "acquired"
	outcomeTimeout   = "timeout"
	outcomeCancelled = "cancelled"
	outcomeError     = "error"
)

// metrics are a Client's instruments. Every recording takes attribute
// options built once per server (see forServer), so that a recording
// allocates nothing and takes no lock, and costs next to nothing with the
// no-op provider.
type metrics struct {
	acquire   metric.Float64Histogram // s, by server, kind, outcome
	queued    metric.Float64Histogram // s a granted wait spent on the server
	hold      metric.Float64Histogram // s from acquired to released or lost
	renewRTT  metric.Float64Histogram // s of a renewal batch's round trip
	acquired  metric.Int64Counter
	released  metric.Int64Counter
	renewals  metric.Int64Counter // by result
	losses    metric.Int64Counter // by cause
	off       bool                // an explicit no-op provider: nothing is recorded
	held      atomic.Int64        // locks held now
	queuedNow atomic.Int64        // enqueues queued now
	reg       metric.Registration

	servers atomic.Pointer[map[string]*serverOpts] // copied on write
	mu      sync.Mutex                             // serialises writes of servers
}

// Indexes of the attribute options of a server.
const (
	kindLock, kindSemaphore = 0, 1

	outcomeIdxAcquired, outcomeIdxTimeout, outcomeIdxCancelled, outcomeIdxError = 0, 1, 2, 3
)

var (
	kinds    = [...]string{"lock", "semaphore"}
	outcomes = [...]string{outcomeAcquired, outcomeTimeout, outcomeCancelled, outcomeError}
	causes   = [...]string{"connection", "refused", "deadline", "quorum", "fleet", "other"}
	results  = [...]string{"ok", "lost", "retried"}
)

// serverOpts are the measurement options of one server, by kind.
type serverOpts struct {
	server  opts // the server alone
	plain   [2]opts
	outcome [2][len(outcomes)]opts
	cause   [2][len(causes)]opts
	result  [len(results)]opts
}

// opts is one attribute set as the option lists Record and Add take:
// passed with "...", a list made once costs no allocation, where a lone
// option would make one each call.
type opts struct {
	rec []metric.RecordOption
	add []metric.AddOption
}

// forServer returns server's options, making them on first use.
func (m *metrics) forServer(server string) *serverOpts {
	if so := (*m.servers.Load())[server]; so != nil {
		return so
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.servers.Load()
	if so := cur[server]; so != nil {
		return so
	}
	set := func(kvs ...attribute.KeyValue) opts {
		if server != "" {
			kvs = append(kvs, attrServer.String(server))
		}
		o := metric.WithAttributeSet(attribute.NewSet(kvs...))
		return opts{[]metric.RecordOption{o}, []metric.AddOption{o}}
	}
	so := &serverOpts{server: set()}
	for k, kind := range kinds {
		so.plain[k] = set(attrKind.String(kind))
		for i, o := range outcomes {
			so.outcome[k][i] = set(attrKind.String(kind), attrOutcome.String(o))
		}
		for i, c := range causes {
			so.cause[k][i] = set(attrKind.String(kind), attrCause.String(c))
		}
	}
	for i, r := range results {
		so.result[i] = set(attrResult.String(r))
	}
	next := make(map[string]*serverOpts, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[server] = so
	m.servers.Store(&next)
	return so
}

func newMetrics(mp metric.MeterProvider, c *Client) (*metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(meterName)
	_, off := mp.(noop.MeterProvider)
	m := &metrics{off: off}
	m.servers.Store(&map[string]*serverOpts{})
	var errs []error
	hist := func(name, desc string, bounds []float64) metric.Float64Histogram {
		h, err := meter.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(bounds...))
		errs = append(errs, err)
		return h
	}
	count := func(name, unit, desc string) metric.Int64Counter {
		ctr, err := meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return ctr
	}
	// From 100 µs (a pipelined try-lock on loopback) to a minute's wait.
	latency := []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	holds := []float64{0.001, 0.01, 0.1, 1, 10, 60, 300, 1800, 3600}
	m.acquire = hist("dflock.acquire.duration", "Time an Acquire, TryAcquire or Wait took, by outcome (acquired, timeout, cancelled, error)", latency)
	m.queued = hist("dflock.acquire.queued", "Time a granted wait spent queued on the server", latency)
	m.hold = hist("dflock.lock.hold.duration", "Time a lock was held, from acquired to released or lost", holds)
	m.renewRTT = hist("dflock.renewal.duration", "Round trip of a batch of renewals to one server", latency)
	m.acquired = count("dflock.acquisitions", "{lock}", "Locks and slots acquired")
	m.released = count("dflock.releases", "{lock}", "Locks and slots released by their holder")
	m.renewals = count("dflock.renewals", "{renewal}", "Renewals sent, by result (ok; lost: refused; retried: failed in transit, tried again while the lease lasts)")
	m.losses = count("dflock.losses", "{lock}", "Locks lost, by cause (connection, refused, deadline, quorum, fleet, other)")

	// The gauges and the pools' counters are read when collected.
	// Read from each Client when collected; dflock.client keeps two
	// Clients on one provider apart.
	heldG, err := meter.Int64ObservableGauge("dflock.locks.held", metric.WithUnit("{lock}"), metric.WithDescription("Locks and slots the client holds now"))
	errs = append(errs, err)
	queuedG, err := meter.Int64ObservableGauge("dflock.enqueues.queued", metric.WithUnit("{lock}"), metric.WithDescription("The client's enqueues queued on a server now"))
	errs = append(errs, err)
	conns, err := meter.Int64ObservableGauge("dflock.pool.connections", metric.WithUnit("{connection}"), metric.WithDescription("Open connections per server, by kind (shared, idle, pinned, parked)"))
	errs = append(errs, err)
	inFlight, err := meter.Int64ObservableGauge("dflock.pool.requests.in_flight", metric.WithUnit("{request}"), metric.WithDescription("Requests sent and not yet answered, per server"))
	errs = append(errs, err)
	dials, err := meter.Int64ObservableCounter("dflock.pool.dials", metric.WithUnit("{connection}"), metric.WithDescription("Connections dialled, per server, by result (ok, failed)"))
	errs = append(errs, err)
	broken, err := meter.Int64ObservableCounter("dflock.pool.connections.broken", metric.WithUnit("{connection}"), metric.WithDescription("Connections that broke (not closed on purpose), per server"))
	errs = append(errs, err)
	requests, err := meter.Int64ObservableCounter("dflock.pool.requests", metric.WithUnit("{request}"), metric.WithDescription("Requests sent, renewals and keep-alives included, per server"))
	errs = append(errs, err)
	malformed, err := meter.Int64ObservableCounter("dflock.pool.replies.malformed", metric.WithUnit("{reply}"), metric.WithDescription("Replies that could not be parsed (each broke its connection), per server"))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Every counter exported from the start, at 0: a dashboard or an
	// alert on losses finds the series before the first loss.
	for _, ctr := range []metric.Int64Counter{m.acquired, m.released, m.renewals, m.losses} {
		ctr.Add(context.Background(), 0)
	}
	client := attrClient.Int64(clientIDs.Add(1))
	m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(heldG, m.held.Load(), metric.WithAttributes(client))
		o.ObserveInt64(queuedG, m.queuedNow.Load(), metric.WithAttributes(client))
		for _, st := range c.PoolStats() {
			srv := metric.WithAttributes(client, attrServer.String(st.Addr))
			for kind, n := range map[string]int{"shared": st.SharedConns, "idle": st.IdleConns, "pinned": st.PinnedConns, "parked": st.ParkedConns} {
				o.ObserveInt64(conns, int64(n), metric.WithAttributes(client, attrServer.String(st.Addr), attrConn.String(kind)))
			}
			o.ObserveInt64(inFlight, int64(st.InFlight), srv)
			o.ObserveInt64(dials, int64(st.Dials-st.DialErrors), metric.WithAttributes(client, attrServer.String(st.Addr), attrResult.String("ok")))
			o.ObserveInt64(dials, int64(st.DialErrors), metric.WithAttributes(client, attrServer.String(st.Addr), attrResult.String("failed")))
			o.ObserveInt64(broken, int64(st.BrokenConns), srv)
			o.ObserveInt64(requests, int64(st.Requests), srv)
			o.ObserveInt64(malformed, int64(st.MalformedReplies), srv)
		}
		return nil
	}, heldG, queuedG, conns, inFlight, dials, broken, requests, malformed)
	return m, err
}

// kindIdx is the handle's kind, as an index of kinds.
func (l *Lock) kindIdx() int {
	if l.limit > 0 {
		return kindSemaphore
	}
	return kindLock
}

// acquireDone records an acquire (or Wait) on server that began at start.
func (l *Lock) acquireDone(ctx context.Context, server string, start time.Time, ok bool, err error) {
	m := l.c.metrics
	if m.off {
		return
	}
	outcome := acquireOutcome(ctx, ok, err)
	so, k := m.forServer(server), l.kindIdx()
	m.acquire.Record(ctx, time.Since(start).Seconds(), so.outcome[k][outcome].rec...)
	if outcome == outcomeIdxAcquired {
		m.acquired.Add(ctx, 1, so.plain[k].add...)
	}
}

// acquireOutcome says how an acquire (or Wait) ended, as an index of
// outcomes: for the metrics and the spans alike.
func acquireOutcome(ctx context.Context, ok bool, err error) int {
	switch {
	case err != nil && ctx.Err() != nil:
		return outcomeIdxCancelled
	case err != nil:
		return outcomeIdxError
	case !ok:
		return outcomeIdxTimeout
	}
	return outcomeIdxAcquired
}

// heldFrom counts the lock as held from now; l.mu is held.
func (l *Lock) heldFromLocked(server string) {
	l.heldAt, l.heldOn = time.Now(), server
	l.c.metrics.held.Add(1)
}

// heldUntil counts the lock, held since heldFrom, as no longer held:
// released, or lost for cause (an index of causes).
func (l *Lock) heldUntil(at time.Time, server string, released bool, cause int) {
	m := l.c.metrics
	m.held.Add(-1)
	if m.off {
		return
	}
	ctx := context.Background()
	so, k := m.forServer(server), l.kindIdx()
	m.hold.Record(ctx, time.Since(at).Seconds(), so.plain[k].rec...)
	if released {
		m.released.Add(ctx, 1, so.plain[k].add...)
		return
	}
	m.losses.Add(ctx, 1, so.cause[k][cause].add...)
}

// lossCause says why a grant was lost, as an index of causes.
func lossCause(err error) int {
	switch {
	case errors.Is(err, errCannotFollow):
		return 4
	case errors.Is(err, errDeadline):
		return 2
	case errors.Is(err, errQuorumLost):
		return 3
	case errors.Is(err, pool.ErrBroken):
		return 0
	case errors.Is(err, pool.ErrGrantLost):
		return 1
	}
	return 5
}
