package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/wire"
)

// pairLease is the lease of the pair workloads when Config.Lease is unset.
const pairLease = 10 * time.Second

// runLockWorkload runs one of the workloads that go through the lock API.
func runLockWorkload(ctx context.Context, cfg Config, workload, name string, newClient func() (*lock.Client, error)) (Result, error) {
	c, err := newClient()
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	cfg.requests = requestsOf(c)
	lease := lock.LeaseTTL(cmp.Or(cfg.Lease, pairLease))
	pair := func(ctx context.Context, l *lock.Lock) error {
		ok, err := l.Acquire(ctx)
		if err != nil || !ok {
			return orTimeout(err)
		}
		return l.Release(ctx)
	}
	switch workload {
	case "distinct":
		// Throughput: every worker has keys of its own.
		return closedLoop(ctx, cfg, name, "acquire+release of a key no one else uses", func(ctx context.Context, w int, n int64) error {
			return pair(ctx, c.Lock("distinct-"+strconv.Itoa(w)+"-"+strconv.FormatInt(n%64, 10), lease))
		})
	case "hot":
		// Contention: all workers on 4 keys, so most acquires wait in the
		// server's FIFO queue and measure the hand-off.
		return closedLoop(ctx, cfg, name, "acquire+release of one of 4 keys all workers share", func(ctx context.Context, w int, n int64) error {
			return pair(ctx, c.Lock("hot-"+strconv.Itoa(w%4), lease, lock.AcquireTimeout(30*time.Second)))
		})
	case "zipf":
		zipfs := make([]*rand.Zipf, cfg.Workers)
		for w := range zipfs {
			zipfs[w] = rand.NewZipf(rand.New(rand.NewPCG(uint64(w), 42)), 1.1, 1, uint64(cfg.Keys-1))
		}
		return closedLoop(ctx, cfg, name, fmt.Sprintf("acquire+release of a Zipf(1.1)-drawn key of %d", cfg.Keys), func(ctx context.Context, w int, n int64) error {
			return pair(ctx, c.Lock("zipf-"+strconv.FormatUint(zipfs[w].Uint64(), 10), lease, lock.AcquireTimeout(30*time.Second)))
		})
	case "two-phase":
		return closedLoop(ctx, cfg, name, "enqueue+wait+release of a worker's own key", func(ctx context.Context, w int, n int64) error {
			l := c.Lock("twophase-"+strconv.Itoa(w), lease)
			if _, err := l.Enqueue(ctx); err != nil {
				return err
			}
			ok, err := l.Wait(ctx, 10*time.Second)
			if err != nil || !ok {
				l.Close()
				return orTimeout(err)
			}
			return l.Release(ctx)
		})
	case "try-many":
		// Batching: a worker claims 100 free keys of its own at once, as a
		// scheduler claims ready tasks, and gives them back together.
		keys := make([][]string, cfg.Workers)
		for w := range keys {
			for i := range tryManyKeys {
				keys[w] = append(keys[w], "many-"+strconv.Itoa(w)+"-"+strconv.Itoa(i))
			}
		}
		return closedLoop(ctx, cfg, name, fmt.Sprintf("TryLockMany+ReleaseMany of %d free keys of a worker's own", tryManyKeys), func(ctx context.Context, w int, n int64) error {
			held, busy, err := c.TryLockMany(ctx, keys[w], lease)
			if err == nil && len(busy) > 0 {
				err = fmt.Errorf("%d keys busy", len(busy))
			}
			if rerr := c.ReleaseMany(ctx, held...); err == nil {
				err = rerr
			}
			return err
		})
	case "lock-all":
		// Many keys at once under contention: sets that overlap, taken in
		// any order, which LockAll takes without deadlock.
		rngs := make([]*rand.Rand, cfg.Workers)
		for w := range rngs {
			rngs[w] = rand.New(rand.NewPCG(uint64(w), 15))
		}
		return closedLoop(ctx, cfg, name, fmt.Sprintf("LockAll+Release of %d of %d keys all workers share", lockAllSize, lockAllKeys), func(ctx context.Context, w int, n int64) error {
			keys := make([]string, 0, lockAllSize)
			for _, i := range rngs[w].Perm(lockAllKeys)[:lockAllSize] {
				keys = append(keys, "all-"+strconv.Itoa(i))
			}
			s, err := c.LockAll(ctx, keys, lease, lock.AcquireTimeout(30*time.Second))
			if err != nil {
				return err
			}
			return s.Release(ctx)
		})
	case "semaphore":
		limit := max(cfg.Workers/8, 1)
		return closedLoop(ctx, cfg, name, fmt.Sprintf("acquire+release of a slot of one of 4 semaphores of %d", limit), func(ctx context.Context, w int, n int64) error {
			return pair(ctx, c.Semaphore("sem-"+strconv.Itoa(w%4), limit, lease, lock.AcquireTimeout(30*time.Second)).Lock)
		})
	}
	return Result{}, fmt.Errorf("no workload %q", name)
}

// The shapes of try-many and lock-all.
const (
	tryManyKeys = 100
	lockAllSize = 3
	lockAllKeys = 64
)

// requestsOf counts the requests c has sent to every server.
func requestsOf(c *lock.Client) func() uint64 {
	return func() uint64 {
		var n uint64
		for _, ps := range c.PoolStats() {
			n += ps.Requests
		}
		return n
	}
}

// orTimeout is err, or lock.ErrTimeout for an acquire that returned false
// without one.
func orTimeout(err error) error {
	if err != nil {
		return err
	}
	return lock.ErrTimeout
}

// holdManyLease is hold-many's lease when Config.Lease is unset: short
// enough that its locks renew during the hold, so that the report's
// renewals/s measures renewal.
func holdManyLease(hold time.Duration) time.Duration {
	return max(hold/2, time.Second)
}

// runHoldMany takes HoldMany locks, holds them with renewal for the
// duration, and reports what holding costs. One op is one acquire. It
// stops taking locks when it fails (see WorkloadError), and then does not
// hold the ones it took.
func runHoldMany(ctx context.Context, cfg Config, name string, newClient func() (*lock.Client, error), serversInProcess bool) (Result, error) {
	c, err := newClient()
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	lease := cfg.Lease
	if lease == 0 {
		lease = holdManyLease(cfg.Duration)
	}
	what := fmt.Sprintf("acquire of one of %d locks then held %v with a %v lease", cfg.HoldMany, cfg.Duration, lease)
	var lost atomic.Int64
	locks := make([]*lock.Lock, cfg.HoldMany)
	var next, acquired, failed atomic.Int64
	tallies := make([]*tally, cfg.Workers)
	for w := range cfg.Workers {
		tallies[w] = newTally()
	}
	wctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	// After the harness's own tables: what grows from here is the
	// client's cost of holding the locks.
	before := heapBytes()
	// One op's CPU is its acquire and its share of the holding (renewals),
	// but not the forced collection that measures the heap.
	cpu := cpuSpan{requests: requestsOf(c)}
	cpu.start()
	var wg sync.WaitGroup
	began := time.Now()
	for w := range cfg.Workers {
		t := tallies[w]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var bo backoff
			for wctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(locks)) {
					return
				}
				l := c.Lock("hold-"+strconv.FormatInt(i, 10), lock.LeaseTTL(lease), lock.OnLost(func(string, error) { lost.Add(1) }))
				start := time.Now()
				ok, err := l.Acquire(wctx)
				if err == nil && ok {
					bo.reset()
					t.hist.RecordValue(int64(time.Since(start)))
					locks[i] = l
					acquired.Add(1)
					continue
				}
				if wctx.Err() != nil {
					return
				}
				err = orTimeout(err)
				t.fail(err)
				if f := failed.Add(1); fatal(err) || (f >= holdManyMinFailures && f > acquired.Load()) {
					// The outcome is known: taking the rest would only
					// hammer the servers.
					stop(err)
					return
				}
				bo.wait(wctx, time.Time{})
			}
		}()
	}
	wg.Wait()
	acquiring := time.Since(began)
	cpu.stop()
	if err := judge(name, tallies, context.Cause(wctx)); err != nil || ctx.Err() != nil {
		return summarise(name, what, tallies, acquired.Load(), acquiring, &cpu), err
	}
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
	res := summarise(name, what, tallies, int64(held), acquiring, &cpu)
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
	if cfg.Pool.AuthToken != "" || cfg.Pool.TLS != nil {
		return Result{}, fmt.Errorf("the raw baseline speaks plain TCP without auth; leave it out (--workloads) for these servers")
	}
	// The requests below do not take ctx: closing their connections is
	// what ends them when it ends.
	defer context.AfterFunc(ctx, func() {
		for _, nc := range conns {
			nc.Close()
		}
	})()
	cfgRaw := cfg
	cfgRaw.Workers = len(conns)
	readers := make([]*wire.LineReader, len(conns))
	bufs := make([][]byte, len(conns))
	// broken[w] is why worker w's connection is unusable, once it is: it
	// is not redialled, so every later op of w fails with it.
	broken := make([]error, len(conns))
	for i, nc := range conns {
		readers[i] = wire.NewLineReader(bufio.NewReader(nc), wire.MaxResponseLen)
	}
	res, err := closedLoop(ctx, cfgRaw, "raw", fmt.Sprintf("an l/r pair pipelined %d at a time on plain connections, %d per server (latency is per %d pairs)", window, connsPerServer, window), func(ctx context.Context, w int, n int64) error {
		if broken[w] != nil {
			return broken[w]
		}
		nc, lr := conns[w], readers[w]
		brk := func(err error) error {
			broken[w] = fmt.Errorf("%w: %s: %w", errRawBroken, nc.RemoteAddr(), err)
			return broken[w]
		}
		buf := bufs[w][:0]
		keys := [window]string{}
		for i := range keys {
			keys[i] = "raw-" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
			req := wire.Request{Cmd: wire.CmdLock, Key: keys[i]}
			buf, _ = req.Append(buf)
		}
		if _, err := nc.Write(buf); err != nil {
			return brk(err)
		}
		// Every reply is read, and every grant released, even after a
		// refusal: the connection stays in step for the next op.
		var refused error
		releases := 0
		buf = buf[:0]
		for i := range keys {
			line, err := lr.ReadLine()
			if err != nil {
				// A refusal the server closes the connection after
				// (error_auth) says more than the close.
				return cmp.Or(refused, brk(err))
			}
			resp, err := wire.ParseResponse(wire.CmdLock, line)
			if err != nil {
				return brk(err)
			}
			if err := resp.Err(); err != nil {
				refused = cmp.Or(refused, err)
				continue
			}
			req := wire.Request{Cmd: wire.CmdRelease, Key: keys[i], Token: resp.Token}
			buf, _ = req.Append(buf)
			releases++
		}
		bufs[w] = buf
		if releases == 0 {
			return refused
		}
		if _, err := nc.Write(buf); err != nil {
			return brk(err)
		}
		for range releases {
			line, err := lr.ReadLine()
			if err != nil {
				return brk(err)
			}
			resp, err := wire.ParseResponse(wire.CmdRelease, line)
			if err != nil {
				return brk(err)
			}
			refused = cmp.Or(refused, resp.Err())
		}
		return refused
	})
	// Each op above moved window pairs.
	res.Ops *= window
	res.PerSecond *= window
	res.CPUPerOp /= window
	return res, err
}

// errRawBroken is the raw baseline's broken connection; it counts as
// broken_conn.
var errRawBroken = errors.New("connection broken")
