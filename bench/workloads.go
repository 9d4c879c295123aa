package bench

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/wire"
)

// runLockWorkload runs one of the workloads that go through the lock API.
func runLockWorkload(ctx context.Context, cfg Config, name string, newClient func() (*lock.Client, error)) (Result, error) {
	c, err := newClient()
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	lease := lock.LeaseTTL(cfg.Lease)
	pair := func(l *lock.Lock) string {
		ok, err := l.Acquire(ctx)
		if err != nil {
			return kind(err)
		}
		if !ok {
			return "timeout"
		}
		return kind(l.Release(ctx))
	}
	switch name {
	case "distinct":
		// Throughput: every worker has keys of its own.
		return closedLoop(ctx, cfg, name, "acquire+release of a key no one else uses", func(ctx context.Context, w int, n int64) string {
			return pair(c.Lock("distinct-"+strconv.Itoa(w)+"-"+strconv.FormatInt(n%64, 10), lease))
		}), nil
	case "hot":
		// Contention: all workers on 4 keys, so most acquires wait in the
		// server's FIFO queue and measure the hand-off.
		return closedLoop(ctx, cfg, name, "acquire+release of one of 4 keys all workers share", func(ctx context.Context, w int, n int64) string {
			return pair(c.Lock("hot-"+strconv.Itoa(w%4), lease, lock.AcquireTimeout(30*time.Second)))
		}), nil
	case "zipf":
		zipfs := make([]*rand.Zipf, cfg.Workers)
		for w := range zipfs {
			zipfs[w] = rand.NewZipf(rand.New(rand.NewPCG(uint64(w), 42)), 1.1, 1, uint64(cfg.Keys-1))
		}
		return closedLoop(ctx, cfg, name, fmt.Sprintf("acquire+release of a Zipf(1.1)-drawn key of %d", cfg.Keys), func(ctx context.Context, w int, n int64) string {
			return pair(c.Lock("zipf-"+strconv.FormatUint(zipfs[w].Uint64(), 10), lease, lock.AcquireTimeout(30*time.Second)))
		}), nil
	case "two-phase":
		return closedLoop(ctx, cfg, name, "enqueue+wait+release of a worker's own key", func(ctx context.Context, w int, n int64) string {
			l := c.Lock("twophase-"+strconv.Itoa(w), lease)
			if _, err := l.Enqueue(ctx); err != nil {
				return kind(err)
			}
			ok, err := l.Wait(ctx, 10*time.Second)
			if err != nil || !ok {
				l.Close()
				return orTimeout(err)
			}
			return kind(l.Release(ctx))
		}), nil
	case "semaphore":
		limit := max(cfg.Workers/8, 1)
		return closedLoop(ctx, cfg, name, fmt.Sprintf("acquire+release of a slot of one of 4 semaphores of %d", limit), func(ctx context.Context, w int, n int64) string {
			return pair(c.Semaphore("sem-"+strconv.Itoa(w%4), limit, lease, lock.AcquireTimeout(30*time.Second)).Lock)
		}), nil
	}
	return Result{}, fmt.Errorf("no workload %q", name)
}

func orTimeout(err error) string {
	if err != nil {
		return kind(err)
	}
	return "timeout"
}

// runHoldMany takes HoldMany locks, holds them with renewal for the
// duration, and reports what holding costs. One op is one acquire.
func runHoldMany(ctx context.Context, cfg Config, newClient func() (*lock.Client, error), serversInProcess bool) (Result, error) {
	c, err := newClient()
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	// Short leases make renewal work during the run.
	lease := max(min(cfg.Lease, cfg.Duration/2), time.Second)
	var lost atomic.Int64
	locks := make([]*lock.Lock, cfg.HoldMany)
	var next atomic.Int64
	hists := make([]*hdrhistogram.Histogram, cfg.Workers)
	errs := make([]map[string]int64, cfg.Workers)
	for w := range cfg.Workers {
		hists[w], errs[w] = newHistogram(), map[string]int64{}
	}
	// After the harness's own tables: what grows from here is the
	// client's cost of holding the locks.
	before := heapBytes()
	// One op's CPU is its acquire and its share of the holding (renewals),
	// but not the forced collection that measures the heap.
	var cpu cpuSpan
	cpu.start()
	var wg sync.WaitGroup
	began := time.Now()
	for w := range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(locks)) || ctx.Err() != nil {
					return
				}
				l := c.Lock("hold-"+strconv.FormatInt(i, 10), lock.LeaseTTL(lease), lock.OnLost(func(string, error) { lost.Add(1) }))
				start := time.Now()
				ok, err := l.Acquire(ctx)
				if k := kind(err); k != "" || !ok {
					errs[w][orTimeout(err)]++
					continue
				}
				hists[w].RecordValue(int64(time.Since(start)))
				locks[i] = l
			}
		}()
	}
	wg.Wait()
	acquiring := time.Since(began)
	cpu.stop()
	perLock := float64(heapBytes()-before) / float64(cfg.HoldMany)
	sent := c.RenewalsSent()
	cpu.start()
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	cpu.stop()
	renewals := float64(c.RenewalsSent()-sent) / cfg.Duration.Seconds()
	held, conns := 0, 0
	for _, l := range locks {
		if l != nil && l.Token() != "" {
			held++
		}
	}
	for _, ps := range c.PoolStats() {
		conns = max(conns, ps.Conns)
	}
	res := summarise("hold-many", fmt.Sprintf("acquire of one of %d locks then held %v with a %v lease", cfg.HoldMany, cfg.Duration, lease), hists, errs, int64(held), acquiring, &cpu)
	res.Extra = map[string]float64{
		"lost":             float64(lost.Load()),
		"held at end":      float64(held),
		"renewals/s":       float64(int64(renewals)),
		"max conns/server": float64(conns),
	}
	if !serversInProcess {
		// With the fleet in this process the heap holds the servers too.
		res.Extra["client heap B/lock"] = float64(int64(perLock))
	}
	runtime.KeepAlive(locks)
	return res, nil
}

func heapBytes() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// runRaw measures what the servers do with no client logic in the way:
// try-lock/release pairs of distinct keys written 32 at a time on plain
// connections, 2 per server. One op is one pair.
func runRaw(ctx context.Context, cfg Config, servers []string) (Result, error) {
	const window, connsPerServer = 32, 2
	var conns []net.Conn
	for _, addr := range servers {
		for range connsPerServer {
			nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return Result{}, err
			}
			conns = append(conns, nc)
		}
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	if cfg.AuthToken != "" || cfg.TLS != nil {
		return Result{}, fmt.Errorf("the raw baseline speaks plain TCP without auth; leave it out (--workloads) for these servers")
	}
	cfgRaw := cfg
	cfgRaw.Workers = len(conns)
	readers := make([]*wire.LineReader, len(conns))
	bufs := make([][]byte, len(conns))
	for i, nc := range conns {
		readers[i] = wire.NewLineReader(bufio.NewReader(nc), wire.MaxResponseLen)
	}
	res := closedLoop(ctx, cfgRaw, "raw", fmt.Sprintf("an l/r pair pipelined %d at a time on plain connections, %d per server (latency is per %d pairs)", window, connsPerServer, window), func(ctx context.Context, w int, n int64) string {
		nc, lr := conns[w], readers[w]
		buf := bufs[w][:0]
		keys := [window]string{}
		for i := range keys {
			keys[i] = "raw-" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
			req := wire.Request{Cmd: wire.CmdLock, Key: keys[i]}
			buf, _ = req.Append(buf)
		}
		if _, err := nc.Write(buf); err != nil {
			return "broken_conn"
		}
		buf = buf[:0]
		for i := range keys {
			line, err := lr.ReadLine()
			if err != nil {
				return "broken_conn"
			}
			resp, err := wire.ParseResponse(wire.CmdLock, line)
			if err != nil || resp.Err() != nil {
				return "other"
			}
			req := wire.Request{Cmd: wire.CmdRelease, Key: keys[i], Token: resp.Token}
			buf, _ = req.Append(buf)
		}
		if _, err := nc.Write(buf); err != nil {
			return "broken_conn"
		}
		for range keys {
			if _, err := lr.ReadLine(); err != nil {
				return "broken_conn"
			}
		}
		bufs[w] = buf
		return ""
	})
	// Each op above moved window pairs.
	res.Ops *= window
	res.PerSecond *= window
	res.CPUPerOp /= window
	return res, nil
}
