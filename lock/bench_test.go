package lock_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dflock-go/dflock/bench"
	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
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
	var next atomic.Int64
	ctx := context.Background()
	b.SetParallelism(50) // 50 × GOMAXPROCS(2) = 100 goroutines
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := fmt.Sprintf("bench-%d", next.Add(1))
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

// TestHelperFleet is not a test: BenchmarkHoldMany runs the test binary
// with DFLOCK_HELPER_FLEET=n to get a fleet in another process, so that
// the servers' memory does not count as the client's.
func TestHelperFleet(t *testing.T) {
	if os.Getenv("DFLOCK_HELPER_FLEET") == "" {
		t.Skip("helper process for BenchmarkHoldMany")
	}
	f, err := fakeserver.StartFleet(3, fakeserver.Config{MaxLocks: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Println("FLEET", strings.Join(f.Addrs(), ","))
	// Serve until the benchmark closes our stdin.
	bufio.NewReader(os.Stdin).ReadString('\n')
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
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFleet$")
	cmd.Env = append(os.Environ(), "DFLOCK_HELPER_FLEET=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	var addrs []string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "FLEET "); ok {
			addrs = strings.Split(a, ",")
			break
		}
	}
	if len(addrs) != 3 {
		b.Fatal("no fleet")
	}
	go func() {
		for sc.Scan() {
		}
	}()

	for range b.N {
		// The harness's hold-many workload, against servers in another
		// process, so that its heap figure is the client's alone.
		rep, err := bench.Run(context.Background(), bench.Config{
			Servers: addrs, Workloads: []string{"hold-many"},
			HoldMany: locks, Lease: lease, Duration: hold, Workers: 200,
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
