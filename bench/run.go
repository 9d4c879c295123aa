package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/schollz/progressbar/v3"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/shard"
)

// Run runs the configured workloads one after the other and reports them.
//
// It stops at the first workload that fails as a whole (see
// WorkloadError) and when ctx ends, and then returns the report so far
// with the error: a failed workload's figures are its last result and
// Report.Failed names it; the figures of a workload that ctx cut short
// are left out and Report.Interrupted names it.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	rep := &Report{Servers: cfg.Servers, Strategy: cfg.Strategy, Workers: cfg.Workers}
	switch {
	case len(cfg.Servers) > 0:
	case cfg.FleetCommand != nil:
		addrs, stop, err := startChildFleet(ctx, cfg.FleetCommand(), embeddedServers(cfg))
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer stop()
		rep.Servers, rep.Embedded = addrs, true
	default:
		fleet, err := startEmbeddedFleet(embeddedServers(cfg))
		if err != nil {
			return nil, err
		}
		defer fleet.Close()
		rep.Servers, rep.Embedded, rep.ServersInProcess = fleet.Addrs(), true, true
	}
	if cfg.Reshard {
		rep.Strategy = strings.Join(cfg.ReshardStrategies, ", ")
		stopBar := progress(cfg, "reshard", time.Duration(len(cfg.ReshardStrategies))*(cfg.Warmup+6*cfg.Duration))
		res, err := runReshard(ctx, cfg, rep.Servers, reshardClient(cfg))
		stopBar()
		rep.Results = res
		if ctx.Err() != nil {
			rep.Interrupted = "reshard"
			return rep, fmt.Errorf("bench: interrupted during reshard: %w", context.Cause(ctx))
		}
		if err != nil {
			return rep, fmt.Errorf("bench: reshard: %w", err)
		}
		return rep, nil
	}
	strategy, err := shard.ByName(cfg.Strategy, rep.Servers)
	if err != nil {
		return nil, err
	}
	newClient := func(replicas int, mp metric.MeterProvider) (*lock.Client, error) {
		return lock.New(lock.Config{Strategy: strategy, Replicas: replicas, Pool: cfg.Pool, MeterProvider: mp, Logger: quiet})
	}
	type run struct {
		workload, name string
		replicas       int
		meter          string // a Meters setting, or "" for MeterProvider
	}
	var runs []run
	meters := cfg.Meters
	if len(meters) == 0 {
		meters = []string{""}
	}
	for _, name := range cfg.Workloads {
		if name == "raw" {
			runs = append(runs, run{name, name, cfg.Replicas[0], ""})
			continue
		}
		// Side by side: each workload once per replica count and
		// metrics setting.
		for _, r := range cfg.Replicas {
			for _, m := range meters {
				n := name
				if len(cfg.Replicas) > 1 || r != 1 {
					n += fmt.Sprintf("/r%d", r)
				}
				if m != "" {
					n += "/" + m
				}
				runs = append(runs, run{name, n, r, m})
			}
		}
	}

	var bar *progressbar.ProgressBar
	if cfg.Progress != nil {
		total := time.Duration(len(runs)) * (cfg.Duration + cfg.Warmup)
		bar = progressbar.NewOptions64(total.Milliseconds(), progressbar.OptionSetWriter(cfg.Progress),
			progressbar.OptionSetDescription("dflock bench"), progressbar.OptionClearOnFinish(),
			progressbar.OptionSetPredictTime(false), progressbar.OptionShowCount())
		defer bar.Finish()
	}

	var raw float64
	for i, rn := range runs {
		name := rn.name
		mp, shutdown := meterProvider(rn.meter, cfg.MeterProvider)
		newClient := func() (*lock.Client, error) { return newClient(rn.replicas, mp) }
		if bar != nil {
			bar.Describe(name)
		}
		stopBar := advance(bar, int64(i)*(cfg.Duration+cfg.Warmup).Milliseconds())
		var res Result
		var err error
		switch rn.workload {
		case "raw":
			res, err = runRaw(ctx, cfg, rep.Servers)
		case "hold-many":
			res, err = runHoldMany(ctx, cfg, name, newClient, rep.ServersInProcess)
		default:
			res, err = runLockWorkload(ctx, cfg, rn.workload, name, newClient)
		}
		stopBar()
		shutdown()
		if ctx.Err() != nil {
			// What a cut-short workload counted is no measurement of it.
			rep.Interrupted = name
			return rep, fmt.Errorf("bench: interrupted during %s: %w", name, context.Cause(ctx))
		}
		var failed *WorkloadError
		if err != nil && !errors.As(err, &failed) {
			return rep, fmt.Errorf("bench: %s: %w", name, err)
		}
		switch {
		case name == "raw":
			raw = res.PerSecond
		case onePair(rn.workload) && raw > 0:
			res.VsRaw = res.PerSecond / raw
		}
		if k := keysPerOp(rn.workload); k > 1 {
			res.Extra = map[string]float64{"keys/s": res.PerSecond * float64(k)}
		}
		rep.Results = append(rep.Results, res)
		if failed != nil {
			rep.Failed = name
			return rep, failed
		}
	}
	return rep, nil
}

// onePair reports whether an op of workload is one acquire and release,
// as the raw baseline's is: only those get a ratio to it (hold-many's op
// is an acquire, try-many's and lock-all's take many keys).
func onePair(workload string) bool {
	return !slices.Contains([]string{"hold-many", "try-many", "lock-all"}, workload)
}

// keysPerOp is how many keys an op of workload takes.
func keysPerOp(workload string) int {
	switch workload {
	case "try-many":
		return tryManyKeys
	case "lock-all":
		return lockAllSize
	}
	return 1
}

// meterSettings are the values of Config.Meters.
var meterSettings = []string{"off", "global", "sdk"}

// MeterSettings lists the settings Config.Meters takes.
func MeterSettings() []string { return slices.Clone(meterSettings) }

// meterProvider returns the provider of a Config.Meters setting, and
// what ends it; "" is def.
func meterProvider(setting string, def metric.MeterProvider) (metric.MeterProvider, func()) {
	switch setting {
	case "off":
		return noop.NewMeterProvider(), func() {}
	case "global":
		return nil, func() {}
	case "sdk":
		// A reader that is never read: the SDK still aggregates every
		// measurement, which is the cost an exporter's scrape would
		// find.
		p := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		return p, func() { p.Shutdown(context.Background()) }
	}
	return def, func() {}
}

// progress shows a bar for a run of one part that takes about total,
// when Config.Progress asks for one, until the returned stop.
func progress(cfg Config, name string, total time.Duration) func() {
	if cfg.Progress == nil {
		return func() {}
	}
	bar := progressbar.NewOptions64(total.Milliseconds(), progressbar.OptionSetWriter(cfg.Progress),
		progressbar.OptionSetDescription("dflock bench "+name), progressbar.OptionClearOnFinish(),
		progressbar.OptionSetPredictTime(false), progressbar.OptionShowCount())
	stop := advance(bar, 0)
	return func() {
		stop()
		bar.Finish()
	}
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

// op is one operation of a workload, by worker w; nil means success.
type op func(ctx context.Context, w int, n int64) error

// closedLoop runs workers that each do op back to back: unmeasured for
// the warm-up, then measured for the duration. Latencies go to one HDR
// histogram per worker, merged at the end. A worker backs off after a
// failure (see minBackoff); an error that no retry fixes stops every
// worker. The error returned is the workload's failure as a whole
// (WorkloadError), if it failed.
//
// CPU time is sampled by the first worker to start an op in the measured
// phase and by the first to find it over, so the span holds exactly the
// starts of the ops counted; what ops in flight carry across either edge
// cancels out in a steady state.
//
// An op that takes longer than the warm-up and the duration together (a
// slow server, a busy machine, a short --duration) would leave the
// measured phase with no op started: a worker that finds it over before
// it started an op in it starts one, measured, so that the workload has
// figures rather than "no operation completed".
func closedLoop(ctx context.Context, cfg Config, name, what string, do op) (Result, error) {
	wctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	tallies := make([]*tally, cfg.Workers)
	var ops atomic.Int64
	cpu := cpuSpan{requests: cfg.requests}
	var cpuFrom, cpuTo sync.Once
	began := time.Now()
	measureFrom := began.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		t := newTally()
		tallies[w] = t
		wg.Add(1)
		go func() {
			defer wg.Done()
			var bo backoff
			started := false // an op in the measured phase
			for n := int64(0); wctx.Err() == nil; n++ {
				start := time.Now()
				if !start.Before(end) && started {
					cpuTo.Do(cpu.stop)
					return
				}
				measured := !start.Before(measureFrom)
				if measured {
					cpuFrom.Do(cpu.start)
					started = true
				}
				err := do(wctx, w, n)
				switch {
				case err == nil:
					bo.reset()
					if measured {
						t.hist.RecordValue(int64(time.Since(start)))
						ops.Add(1)
					}
				case wctx.Err() != nil:
					// Failed because the workload was stopped: not a
					// failure of its own.
					return
				case fatal(err):
					// Counted even in the warm-up: it is why the
					// workload has no figures.
					t.fail(err)
					stop(err)
					return
				default:
					if measured {
						t.fail(err)
					}
					bo.wait(wctx, end)
				}
			}
		}()
	}
	wg.Wait()
	// A stopped run may never reach either edge.
	cpuFrom.Do(cpu.start)
	cpuTo.Do(cpu.stop)
	return summarise(name, what, tallies, ops.Load(), cfg.Duration, &cpu), judge(name, tallies, context.Cause(wctx))
}

func newHistogram() *hdrhistogram.Histogram {
	// 1 µs to 60 s at 3 significant digits.
	return hdrhistogram.New(int64(time.Microsecond), int64(time.Minute), 3)
}

func summarise(name, what string, tallies []*tally, ops int64, d time.Duration, cpu *cpuSpan) Result {
	all := newHistogram()
	res := Result{
		Name: name, Op: what, Ops: ops, Seconds: d.Seconds(),
		PerSecond: float64(ops) / d.Seconds(),
		CPUPerOp:  cpu.perOp(ops),
		ReqPerOp:  cpu.reqPerOp(ops),
		Errors:    map[string]int64{},
	}
	for _, t := range tallies {
		all.Merge(t.hist)
		for k, v := range t.errs {
			res.Errors[k] += v
		}
	}
	if all.TotalCount() > 0 {
		// An empty histogram answers 1µs, its lowest value, to every
		// quantile; with nothing measured the latencies stay 0, which
		// the table prints as "-".
		res.Mean = time.Duration(all.Mean())
		res.P50 = time.Duration(all.ValueAtQuantile(50))
		res.P90 = time.Duration(all.ValueAtQuantile(90))
		res.P99 = time.Duration(all.ValueAtQuantile(99))
		res.P999 = time.Duration(all.ValueAtQuantile(99.9))
		res.Max = time.Duration(all.Max())
		res.Curve = curve(all)
	}
	return res
}

// curve samples h's latency by percentile, evenly on the scale of
// 1/(1-p) that HDR plots use: ten points per nine, from the median to
// 99.999%, then the maximum.
func curve(h *hdrhistogram.Histogram) []CurvePoint {
	var out []CurvePoint
	for k := 3; k <= 50; k++ {
		p := 100 * (1 - math.Pow(10, -float64(k)/10))
		out = append(out, CurvePoint{Percentile: p, Latency: time.Duration(h.ValueAtQuantile(p))})
	}
	return append(out, CurvePoint{Percentile: 100, Latency: time.Duration(h.Max())})
}

// quiet is the benchmark clients' logger: the report counts their errors
// and losses, and the faults a workload injects on purpose would
// otherwise fill the terminal through slog.Default().
var quiet = slog.New(slog.DiscardHandler)
