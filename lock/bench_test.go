package lock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/dflock-go/dflock/bench"
	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/shard"
)

// BenchmarkAcquireRelease: 100 goroutines take and release distinct keys
// through the high-level API against one fakeserver. One op is one pair.
func BenchmarkAcquireRelease(b *testing.B) {
	srv, err := fakeserver.Start(fakeserver.Config{MaxLocks: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c, err := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchPairs(b, c, func(i int) string { return fmt.Sprintf("bench-%d", i) })
}

// benchPairs runs acquire+release pairs of distinct keys (key(i) for
// goroutine i) on c from 100 goroutines; one op is one pair.
func benchPairs(b *testing.B, c *lock.Client, key func(i int) string) {
	var next atomic.Int64
	ctx := context.Background()
	b.SetParallelism(50) // 50 × GOMAXPROCS(2) = 100 goroutines
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := key(int(next.Add(1)))
		for pb.Next() {
			l := c.Lock(key)
			ok, err := l.Acquire(ctx)
			if err != nil || !ok {
				b.Errorf("acquire: %v %v", ok, err)
				return
			}
			if err := l.Release(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkAcquireReleaseReplicas: as BenchmarkAcquireRelease, over 3
// fakeservers, with keys on 1 and on 3 of them.
func BenchmarkAcquireReleaseReplicas(b *testing.B) {
	fleet, err := fakeserver.StartFleet(3, fakeserver.Config{MaxLocks: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer fleet.Close()
	for _, r := range []int{1, 3} {
		b.Run(fmt.Sprintf("r%d", r), func(b *testing.B) {
			c, err := lock.New(lock.Config{Servers: fleet.Addrs(), Replicas: r})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			benchPairs(b, c, func(i int) string { return fmt.Sprintf("bench-%d", i) })
		})
	}
}

// BenchmarkAcquireReleaseInTransition: as BenchmarkAcquireRelease, over
// 4 fakeservers with rendezvous hashing, by a client steady on 3 of them
// and by one in the transition to all 4: a key that stays where it is
// costs what it did, one that moves is taken on two servers.
func BenchmarkAcquireReleaseInTransition(b *testing.B) {
	fleet, err := fakeserver.StartFleet(4, fakeserver.Config{MaxLocks: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer fleet.Close()
	before, _ := shard.NewRendezvous(fleet.Addrs()[:3])
	after, _ := shard.NewRendezvous(fleet.Addrs())
	tr, _ := shard.NewTransition(before, after)
	// Keys of each kind, one per goroutine.
	var moved, stay []string
	for i := 0; len(moved) < 200 || len(stay) < 200; i++ {
		k := fmt.Sprintf("bench-%d", i)
		if from, to, _ := tr.Owners(k); from != to {
			moved = append(moved, k)
		} else {
			stay = append(stay, k)
		}
	}
	for _, bc := range []struct {
		name     string
		strategy shard.Strategy
		keys     []string
	}{{"steady", before, stay}, {"unmoved", tr, stay}, {"moved", tr, moved}} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := lock.New(lock.Config{Strategy: bc.strategy})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			benchPairs(b, c, func(i int) string { return bc.keys[i%len(bc.keys)] })
		})
	}
}

// BenchmarkHoldMany holds 100,000 locks over 3 servers with a 3 s lease
// for 10 s and reports connections per server, client heap per held lock,
// renewals per second and locks lost. Run it alone:
//
//	go test ./lock -run '^$' -bench HoldMany -benchtime 1x
func BenchmarkHoldMany(b *testing.B) {
	const (
		locks = 100_000
		lease = 3 * time.Second
		hold  = 10 * time.Second
	)
	for range b.N {
		// The harness's hold-many workload, against servers in another
		// process (this test binary again), so that its heap figure is the
		// client's alone.
		rep, err := bench.Run(context.Background(), bench.Config{
			FleetCommand: func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") },
			Workloads:    []string{"hold-many"},
			HoldMany:     locks, Lease: lease, Duration: hold, Workers: 200,
		})
		if err != nil {
			b.Fatal(err)
		}
		res := rep.Results[0]
		b.ReportMetric(res.Extra["max conns/server"], "max-conns/server")
		b.ReportMetric(res.Extra["client heap B/lock"], "heap-B/lock")
		b.ReportMetric(res.Extra["renewals/s"], "renewals/s")
		b.ReportMetric(res.Extra["lost"], "lost")
		b.ReportMetric(float64(locks)-res.Extra["held at end"], "not-held")
		b.ReportMetric(res.PerSecond, "acquires/s")
	}
}

// BenchmarkAcquireReleaseMetrics: as BenchmarkAcquireRelease, with
// recording off (the no-op provider), through OpenTelemetry's global
// provider (a no-op: the default), and into the SDK.
func BenchmarkAcquireReleaseMetrics(b *testing.B) {
	srv, err := fakeserver.Start(fakeserver.Config{MaxLocks: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	sdk := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer sdk.Shutdown(context.Background())
	for _, bc := range []struct {
		name string
		mp   metric.MeterProvider
	}{{"off", noop.NewMeterProvider()}, {"global", nil}, {"sdk", sdk}} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := lock.New(lock.Config{Servers: []string{srv.Addr()}, MeterProvider: bc.mp})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			benchPairs(b, c, func(i int) string { return fmt.Sprintf("bench-%d", i) })
		})
	}
}

// BenchmarkTryLockMany takes 500 free keys over 3 fakeservers, and gives
// them back: with TryLockMany and ReleaseMany (also with every key on all
// 3 servers), with a loop of TryAcquire and Release, and with a goroutine
// per key. ns/op is the take alone;
// requests/key and writes/key count the take and the release.
//
// DFLOCK_TEST_SERVERS=host:port,... runs it against real servers.
func BenchmarkTryLockMany(b *testing.B) {
	const n = 500
	addrs := strings.Split(os.Getenv("DFLOCK_TEST_SERVERS"), ",")
	if addrs[0] == "" {
		fleet, err := fakeserver.StartFleet(3, fakeserver.Config{MaxLocks: -1})
		if err != nil {
			b.Fatal(err)
		}
		defer fleet.Close()
		addrs = fleet.Addrs()
	}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("task-%d", i)
	}
	ctx := context.Background()
	many := func(c *lock.Client) ([]*lock.Lock, error) {
		held, busy, err := c.TryLockMany(ctx, keys)
		if err == nil && len(busy) > 0 {
			err = fmt.Errorf("%d busy", len(busy))
		}
		return held, err
	}
	for _, bc := range []struct {
		name     string
		replicas int
		take     func(c *lock.Client) ([]*lock.Lock, error)
		give     func(c *lock.Client, ls []*lock.Lock) error
	}{
		{"many-r3", 3, many, func(c *lock.Client, ls []*lock.Lock) error { return c.ReleaseMany(ctx, ls...) }},
		{"many", 1, func(c *lock.Client) ([]*lock.Lock, error) {
			held, busy, err := c.TryLockMany(ctx, keys)
			if err == nil && len(busy) > 0 {
				err = fmt.Errorf("%d busy", len(busy))
			}
			return held, err
		}, func(c *lock.Client, ls []*lock.Lock) error { return c.ReleaseMany(ctx, ls...) }},
		{"loop", 1, func(c *lock.Client) ([]*lock.Lock, error) {
			held := make([]*lock.Lock, 0, n)
			for _, k := range keys {
				l := c.Lock(k)
				if ok, err := l.TryAcquire(ctx); err != nil || !ok {
					return held, fmt.Errorf("%s: %v %v", k, ok, err)
				}
				held = append(held, l)
			}
			return held, nil
		}, func(c *lock.Client, ls []*lock.Lock) error {
			for _, l := range ls {
				if err := l.Release(ctx); err != nil {
					return err
				}
			}
			return nil
		}},
		{"goroutines", 1, func(c *lock.Client) ([]*lock.Lock, error) {
			held := make([]*lock.Lock, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i, k := range keys {
				wg.Go(func() {
					held[i] = c.Lock(k)
					if ok, err := held[i].TryAcquire(ctx); err != nil || !ok {
						errs[i] = fmt.Errorf("%s: %v %v", k, ok, err)
					}
				})
			}
			wg.Wait()
			return held, errors.Join(errs...)
		}, func(c *lock.Client, ls []*lock.Lock) error {
			var wg sync.WaitGroup
			errs := make([]error, len(ls))
			for i, l := range ls {
				wg.Go(func() { errs[i] = l.Release(ctx) })
			}
			wg.Wait()
			return errors.Join(errs...)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			defer mp.Shutdown(ctx)
			c, err := lock.New(lock.Config{Servers: addrs, MeterProvider: mp, Replicas: bc.replicas})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			// Connected before the clock starts.
			if ls, err := bc.take(c); err != nil || bc.give(c, ls) != nil {
				b.Fatal(err)
			}
			w0, r0 := writes(b, reader)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				ls, err := bc.take(c)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if err := bc.give(c, ls); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			w1, r1 := writes(b, reader)
			keysDone := float64(b.N * n)
			b.ReportMetric(float64(r1-r0)/keysDone, "requests/key")
			b.ReportMetric(float64(w1-w0)/keysDone, "writes/key")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/keysDone, "µs/key")
		})
	}
}

// writes reads, from the pool's dflock.pool.write.requests histogram,
// how many writes went to the servers and how many requests they carried.
func writes(b testing.TB, r *sdkmetric.ManualReader) (writes, requests uint64) {
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		b.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[int64]); ok && m.Name == "dflock.pool.write.requests" {
				for _, p := range h.DataPoints {
					writes += p.Count
					requests += uint64(p.Sum)
				}
			}
		}
	}
	return writes, requests
}
