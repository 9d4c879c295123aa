package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/schollz/progressbar/v3"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
)

// Run runs the configured workloads one after the other and reports them.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	rep := &Report{Servers: cfg.Servers, Strategy: cfg.Strategy, Workers: cfg.Workers}
	switch {
	case len(cfg.Servers) > 0:
	case cfg.FleetCommand != nil:
		addrs, stop, err := startChildFleet(ctx, cfg.FleetCommand())
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer stop()
		rep.Servers, rep.Embedded = addrs, true
	default:
		fleet, err := startEmbeddedFleet()
		if err != nil {
			return nil, err
		}
		defer fleet.Close()
		rep.Servers, rep.Embedded, rep.ServersInProcess = fleet.Addrs(), true, true
	}
	strategy, err := shard.ByName(cfg.Strategy, rep.Servers)
	if err != nil {
		return nil, err
	}
	newClient := func() (*lock.Client, error) {
		return lock.New(lock.Config{Strategy: strategy, AuthToken: cfg.AuthToken, TLS: cfg.TLS, Pool: pool.Config{MaxConns: cfg.Conns}})
	}

	var bar *progressbar.ProgressBar
	if cfg.Progress != nil {
		total := time.Duration(len(cfg.Workloads)) * (cfg.Duration + cfg.Warmup)
		bar = progressbar.NewOptions64(total.Milliseconds(), progressbar.OptionSetWriter(cfg.Progress),
			progressbar.OptionSetDescription("dflock bench"), progressbar.OptionClearOnFinish(),
			progressbar.OptionSetPredictTime(false), progressbar.OptionShowCount())
		defer bar.Finish()
	}

	var raw float64
	for i, name := range cfg.Workloads {
		if bar != nil {
			bar.Describe(name)
		}
		stopBar := advance(bar, int64(i)*(cfg.Duration+cfg.Warmup).Milliseconds())
		var res Result
		var err error
		switch name {
		case "raw":
			res, err = runRaw(ctx, cfg, rep.Servers)
		case "hold-many":
			res, err = runHoldMany(ctx, cfg, newClient, rep.ServersInProcess)
		default:
			res, err = runLockWorkload(ctx, cfg, name, newClient)
		}
		stopBar()
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", name, err)
		}
		switch {
		case name == "raw":
			raw = res.PerSecond
		case name != "hold-many" && raw > 0:
			// hold-many's op is an acquire, not a pair: no ratio.
			res.VsRaw = res.PerSecond / raw
		}
		rep.Results = append(rep.Results, res)
	}
	return rep, nil
}

// advance moves the bar with the clock until the returned stop is called.
func advance(bar *progressbar.ProgressBar, from int64) func() {
	if bar == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		began := time.Now()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				bar.Set64(from + time.Since(began).Milliseconds())
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// op is one operation of a workload, by worker w; it returns the error
// kind of a failure ("" on success).
type op func(ctx context.Context, w int, n int64) string

// closedLoop runs workers that each do op back to back: unmeasured for
// the warm-up, then measured for the duration. Latencies go to one HDR
// histogram per worker, merged at the end.
//
// CPU time is sampled by the first worker to start an op in the measured
// phase and by the first to find it over, so the span holds exactly the
// starts of the ops counted; what ops in flight carry across either edge
// cancels out in a steady state.
func closedLoop(ctx context.Context, cfg Config, name, what string, do op) Result {
	hists := make([]*hdrhistogram.Histogram, cfg.Workers)
	errs := make([]map[string]int64, cfg.Workers)
	var ops atomic.Int64
	var cpu cpuSpan
	var cpuFrom, cpuTo sync.Once
	began := time.Now()
	measureFrom := began.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		hists[w] = newHistogram()
		errs[w] = map[string]int64{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := int64(0); ctx.Err() == nil; n++ {
				start := time.Now()
				if !start.Before(end) {
					cpuTo.Do(cpu.stop)
					return
				}
				if !start.Before(measureFrom) {
					cpuFrom.Do(cpu.start)
				}
				kind := do(ctx, w, n)
				if start.Before(measureFrom) {
					continue
				}
				if kind != "" {
					errs[w][kind]++
					continue
				}
				hists[w].RecordValue(int64(time.Since(start)))
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	// A cancelled run may never reach either edge.
	cpuFrom.Do(cpu.start)
	cpuTo.Do(cpu.stop)
	return summarise(name, what, hists, errs, ops.Load(), cfg.Duration, &cpu)
}

func newHistogram() *hdrhistogram.Histogram {
	// 1 µs to 60 s at 3 significant digits.
	return hdrhistogram.New(int64(time.Microsecond), int64(time.Minute), 3)
}

func summarise(name, what string, hists []*hdrhistogram.Histogram, errs []map[string]int64, ops int64, d time.Duration, cpu *cpuSpan) Result {
	all := newHistogram()
	for _, h := range hists {
		all.Merge(h)
	}
	res := Result{
		Name: name, Op: what, Ops: ops, Seconds: d.Seconds(),
		PerSecond: float64(ops) / d.Seconds(),
		P50:       time.Duration(all.ValueAtQuantile(50)),
		P90:       time.Duration(all.ValueAtQuantile(90)),
		P99:       time.Duration(all.ValueAtQuantile(99)),
		P999:      time.Duration(all.ValueAtQuantile(99.9)),
		Max:       time.Duration(all.Max()),
		CPUPerOp:  cpu.perOp(ops),
		Errors:    map[string]int64{},
	}
	for _, m := range errs {
		for k, v := range m {
			res.Errors[k] += v
		}
	}
	return res
}

// kind names an error for the report.
func kind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, lock.ErrTimeout):
		return "timeout"
	case errors.Is(err, lock.ErrLockLost):
		return "lost"
	case errors.Is(err, lock.ErrMaxLocks):
		return "max_locks"
	case errors.Is(err, lock.ErrMaxWaiters):
		return "max_waiters"
	case errors.Is(err, lock.ErrLimitMismatch):
		return "limit_mismatch"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "context"
	case errors.Is(err, pool.ErrBroken):
		return "broken_conn"
	}
	return "other"
}
