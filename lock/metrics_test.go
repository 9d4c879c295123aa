package lock_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testlog"
	"github.com/dflock-go/dflock/lock"
)

// collected is one collection of a manual reader, by instrument name.
type collected map[string]metricdata.Aggregation

func collect(t *testing.T, r *sdkmetric.ManualReader) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := collected{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// has reports whether attrs has every key=value of want.
func has(attrs attribute.Set, want map[string]string) bool {
	for k, v := range want {
		if got, ok := attrs.Value(attribute.Key(k)); !ok || got.AsString() != v {
			return false
		}
	}
	return true
}

// count sums, over the data points whose attributes include want, a
// histogram's counts or a counter's or gauge's values.
func (c collected) count(name string, want map[string]string) int64 {
	var n int64
	switch d := c[name].(type) {
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, want) {
				n += int64(p.Count)
			}
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, want) {
				n += int64(p.Count)
			}
		}
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, want) {
				n += p.Value
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, want) {
				n += p.Value
			}
		}
	}
	return n
}

// A scripted workload, read back through the SDK: every instrument
// counts what happened, with the server and kind, never a key. In
// virtual time, each step's effect is there when the step's time has
// passed: a 30 s lease renewed at 15 s, a refused renewal lost at it.
func TestMetrics(t *testing.T) {
	synctest.Test(t, testMetrics)
}

func testMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	f := newVirtualFleet(t, 1, fakeserver.Config{})
	srv := f.server(t, 0)
	c := f.client(t, lock.Config{MeterProvider: mp})
	addr := f.addrs[0]
	ctx := ctxFor(t, time.Hour)
	const lease = 30 * time.Second

	// Every counter is there from the start, at 0.
	start := collect(t, reader)
	for _, name := range []string{"dflock.acquisitions", "dflock.releases", "dflock.renewals", "dflock.losses"} {
		assert.Contains(t, start, name)
		assert.Zero(t, start.count(name, nil), name)
	}

	// Acquired, renewed, released.
	a := c.Lock("a", lock.LeaseTTL(lease))
	mustAcquire(t, a)
	time.Sleep(lease / 2)
	synctest.Wait()
	assert.Equal(t, int64(1), collect(t, reader).count("dflock.renewals", map[string]string{"dflock.result": "ok"}), "renewed at half the lease")
	// A timeout, and a cancelled acquire.
	ok, err := c.Lock("a").TryAcquire(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Lock("a", lock.AcquireTimeout(time.Second)).Acquire(cancelled)
	require.Error(t, err)
	// A semaphore slot, and an enqueue queued behind the lock.
	mustAcquire(t, c.Semaphore("s", 2))
	q := c.Lock("a")
	st, err := q.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, lock.Queued, st)

	m := collect(t, reader)
	lockOn := map[string]string{"server.address": addr, "dflock.kind": "lock"}
	with := func(k, v string) map[string]string {
		out := map[string]string{k: v}
		for k, v := range lockOn {
			out[k] = v
		}
		return out
	}
	assert.Equal(t, int64(1), m.count("dflock.acquire.duration", with("dflock.outcome", "acquired")))
	assert.Equal(t, int64(1), m.count("dflock.acquire.duration", with("dflock.outcome", "timeout")))
	assert.Equal(t, int64(1), m.count("dflock.acquire.duration", with("dflock.outcome", "cancelled")))
	assert.Equal(t, int64(1), m.count("dflock.acquisitions", lockOn))
	assert.Equal(t, int64(1), m.count("dflock.acquisitions", map[string]string{"dflock.kind": "semaphore"}))
	assert.Equal(t, int64(2), m.count("dflock.locks.held", nil))
	assert.Equal(t, int64(1), m.count("dflock.enqueues.queued", nil))
	assert.Equal(t, int64(1), m.count("dflock.renewals", map[string]string{"server.address": addr, "dflock.result": "ok"}))
	assert.Equal(t, int64(1), m.count("dflock.renewal.duration", map[string]string{"server.address": addr}))
	assert.Positive(t, m.count("dflock.pool.requests", map[string]string{"server.address": addr}))
	assert.Positive(t, m.count("dflock.pool.write.requests", map[string]string{"server.address": addr}), "writes, with the requests each carried")
	assert.Equal(t, int64(0), m.count("dflock.pool.replies.malformed", nil))
	assert.Positive(t, m.count("dflock.pool.dials", map[string]string{"server.address": addr, "dflock.result": "ok"}))
	assert.Positive(t, m.count("dflock.pool.connections", map[string]string{"server.address": addr, "dflock.connection.kind": "shared"}))
	assert.Equal(t, int64(1), m.count("dflock.pool.connections", map[string]string{"server.address": addr, "dflock.connection.kind": "pinned"}), "the queued enqueue")

	// The holder releases: the queued enqueue gets it after a wait.
	require.NoError(t, a.Release(ctx))
	ok, err = q.Wait(ctx, wait)
	require.NoError(t, err)
	require.True(t, ok)
	m = collect(t, reader)
	assert.Equal(t, int64(1), m.count("dflock.releases", lockOn))
	assert.Equal(t, int64(1), m.count("dflock.lock.hold.duration", lockOn))
	assert.Equal(t, int64(1), m.count("dflock.acquire.queued", lockOn))
	assert.Equal(t, int64(2), m.count("dflock.acquire.duration", with("dflock.outcome", "acquired")), "Wait counts as an acquire")
	assert.Equal(t, int64(0), m.count("dflock.enqueues.queued", nil))

	// A loss: the server drops every connection, which the client
	// learns of at once.
	srv.DropConnections()
	synctest.Wait()
	require.True(t, gotLost(q.Lost()))
	m = collect(t, reader)
	assert.Equal(t, int64(1), m.count("dflock.losses", with("dflock.cause", "connection")))
	// The semaphore slot's connection was dropped too.
	assert.Equal(t, int64(0), m.count("dflock.locks.held", nil))
	assert.Equal(t, int64(1), m.count("dflock.losses", map[string]string{"dflock.kind": "semaphore", "dflock.cause": "connection"}))
	assert.Positive(t, m.count("dflock.pool.connections.broken", map[string]string{"server.address": addr}))

	// A renewal the server refuses: the lease forced out on the server,
	// lost at the next renewal.
	r := c.Lock("r", lock.LeaseTTL(lease))
	mustAcquire(t, r)
	srv.ExpireNow("r")
	time.Sleep(lease / 2)
	synctest.Wait()
	require.True(t, gotLost(r.Lost()))
	// A bad key is an error, before anything is sent.
	_, err = c.Lock("bad key").Acquire(ctx)
	require.Error(t, err)
	m = collect(t, reader)
	assert.Equal(t, int64(1), m.count("dflock.losses", with("dflock.cause", "refused")))
	assert.Equal(t, int64(1), m.count("dflock.renewals", map[string]string{"dflock.result": "lost"}))
	assert.Equal(t, int64(1), m.count("dflock.acquire.duration", map[string]string{"dflock.outcome": "error"}))
	assert.Equal(t, int64(0), m.count("dflock.pool.requests.in_flight", nil), "nothing in flight at rest")
	// Every instrument the package documents was reported.
	for _, name := range []string{
		"dflock.acquire.duration", "dflock.acquire.queued", "dflock.lock.hold.duration", "dflock.renewal.duration",
		"dflock.acquisitions", "dflock.releases", "dflock.renewals", "dflock.losses", "dflock.locks.held",
		"dflock.enqueues.queued", "dflock.pool.connections", "dflock.pool.requests.in_flight", "dflock.pool.requests",
		"dflock.pool.dials", "dflock.pool.connections.broken", "dflock.pool.replies.malformed", "dflock.pool.write.requests",
	} {
		assert.Contains(t, m, name)
	}
	for name, data := range m {
		// No key, no token in any attribute.
		switch d := data.(type) {
		case metricdata.Histogram[float64]:
			for _, p := range d.DataPoints {
				assert.False(t, p.Attributes.HasValue("key"), name)
			}
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				for _, kv := range p.Attributes.ToSlice() {
					assert.NotContains(t, []string{"a", "s"}, kv.Value.AsString(), "%s: %s", name, kv.Key)
				}
			}
		}
	}
}

// 200 locks lost on one server make two Error lines, not 200: the first
// loss at once, the rest counted into one line when the 1 s window
// closes; each lock keeps a Debug line.
func TestLossesAreLoggedPerServerAndCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf testlog.Buffer
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		c := f.client(t, lock.Config{Logger: buf.Logger()})
		var locks []*lock.Lock
		for i := range 200 {
			l := c.Lock(fmt.Sprintf("k%d", i))
			mustAcquire(t, l)
			locks = append(locks, l)
		}
		errorLines := func() []string {
			return regexp.MustCompile(`(?m)^.*level=ERROR.*lock(s)? lost.*$`).FindAllString(buf.String(), -1)
		}
		f.server(t, 0).DropConnections()
		synctest.Wait()
		for _, l := range locks {
			require.True(t, gotLost(l.Lost()), l.Key())
		}
		assert.Equal(t, 200, strings.Count(buf.String(), "level=DEBUG msg=\"lock lost\""))
		first := errorLines()
		require.Len(t, first, 1, "%s", strings.Join(first, "\n"))
		assert.Contains(t, first[0], "key=k")

		time.Sleep(time.Second)
		synctest.Wait()
		lines := errorLines()
		require.Len(t, lines, 2, "%s", strings.Join(lines, "\n"))
		assert.Regexp(t, `count=199 server=`+regexp.QuoteMeta(f.addrs[0])+` cause=connection`, lines[1])
		require.NoError(t, c.Close())
		assert.Len(t, errorLines(), 2, "nothing left for Close to log")
		assert.Equal(t, 200, strings.Count(buf.String(), "level=DEBUG msg=\"lock lost\""))
	})
}

// With no Config.Logger, losses go to slog.Default(), throttled as ever:
// a new user hears of them without setting anything.
func TestLossesAreLoggedByDefault(t *testing.T) {
	var buf testlog.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil))) // Info and above, as the default's
	t.Cleanup(func() { slog.SetDefault(prev) })
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{})
		c := f.client(t, lock.Config{})
		for i := range 50 {
			mustAcquire(t, c.Lock(fmt.Sprintf("k%d", i)))
		}
		f.server(t, 0).DropConnections()
		time.Sleep(time.Second)
		synctest.Wait()
		out := buf.String()
		assert.Equal(t, 1, strings.Count(out, `msg="lock lost"`), "%s", out)
		assert.Regexp(t, `msg="locks lost" count=49 server=`+regexp.QuoteMeta(f.addrs[0]), out)
		assert.NotContains(t, out, "level=DEBUG")
	})
}

// Two Clients on one provider: their gauges add up, one series each.
func TestMetricsOfTwoClients(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	f := newFleet(t, 1, fakeserver.Config{})
	a := f.client(t, lock.Config{MeterProvider: mp})
	b := f.client(t, lock.Config{MeterProvider: mp})
	for i := range 3 {
		mustAcquire(t, a.Lock(fmt.Sprintf("a%d", i)))
	}
	mustAcquire(t, b.Lock("b"))
	m := collect(t, reader)
	assert.Equal(t, int64(4), m.count("dflock.locks.held", nil))
	assert.GreaterOrEqual(t, m.count("dflock.pool.connections", map[string]string{"dflock.connection.kind": "shared"}), int64(2), "each client's own")
}
