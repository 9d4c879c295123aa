package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/term"

	"github.com/dflock-go/dflock/bench"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
)

// runBench runs the benchmark harness and prints its report.
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if getenv(bench.FleetEnv) != "" {
		// This process is a parent bench's fleet (see below).
		return bench.ServeFleet(os.Stdin, stdout)
	}
	fs := newFlagSet("dflock bench [flags]", "Measures dflock: every workload through the public lock API, against an embedded fleet of fakeservers (in a child process) or --servers.", stderr)
	var (
		cfg       bench.Config
		cf        clientFlags
		workloads string
		asJSON    bool
	)
	cf.register(fs, getenv)
	// One default in the help: the flag package would print the shared
	// flag's default server as well, which bench does not use.
	servers := fs.Lookup("servers")
	servers.Usage, servers.DefValue = "comma-separated servers to measure (default: DFLOCK_SERVERS if set, else an embedded fleet of 3 fakeservers in a child process)", ""
	fs.StringVar(&cfg.Strategy, "strategy", "stable", "stable, consistent or rendezvous (--reshard: all three unless given)")
	fs.IntVar(&cfg.Pool.MaxConns, "conns", pool.DefaultMaxConns, "most connections per server")
	fs.IntVar(&cfg.Workers, "workers", 64, "closed-loop workers")
	durationVar(fs, &cfg.Duration, "duration", 2*time.Second, "measured run of each workload")
	durationVar(fs, &cfg.Warmup, "warmup", 300*time.Millisecond, "unmeasured run before each workload")
	fs.IntVar(&cfg.Keys, "keys", 10_000, "key space of the zipf workload")
	fs.IntVar(&cfg.HoldMany, "hold", 20_000, "locks held by the hold-many workload (--reshard: by its clients, 4000 unless given)")
	durationVar(fs, &cfg.Lease, "lease", 0, "lease of every lock (default 10s, and for hold-many half of --duration, at least 1s, so that its locks renew while held)")
	fs.StringVar(&workloads, "workloads", strings.Join(bench.Workloads(), ","), "workloads to run")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	htmlFile := fs.String("html", "", "also write the report as an HTML page with each workload's latency by percentile plotted (HDR style) to this file")
	metricsAddr := fs.String("metrics-addr", "", "serve the clients' metrics as Prometheus text on http://ADDR/metrics while the run lasts")
	fs.Func("meters", "run each workload (raw aside) once per metrics setting in this comma-separated list, side by side: off (recording off), global (OpenTelemetry's global provider, a no-op: the default), sdk (the OpenTelemetry SDK aggregating everything); rows are named workload/SETTING", func(v string) error {
		cfg.Meters = splitList(v)
		for _, m := range cfg.Meters {
			if !slices.Contains(bench.MeterSettings(), m) {
				return fmt.Errorf("%q is not a metrics setting (%s)", m, strings.Join(bench.MeterSettings(), ", "))
			}
		}
		return nil
	})
	fs.BoolVar(&cfg.Reshard, "reshard", false, "instead of the workloads, measure fleet changes under load: for each strategy (all three, or --strategy), the fleet grows from 3 servers to 4 and back while 4 clients run acquire+release pairs over --keys keys and hold 4,000 locks (--hold), moving through the change one by one; before, during and after are each --duration long. With --servers, the last one listed is the one that goes and comes back")
	setReplicas := func(v string) error {
		cfg.Replicas = nil
		for _, f := range splitList(v) {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n%2 == 0 {
				return fmt.Errorf("%s: replica counts are odd numbers (1, 3, 5...)", f)
			}
			cfg.Replicas = append(cfg.Replicas, n)
		}
		if len(cfg.Replicas) == 0 {
			return errors.New("no replica count given")
		}
		return nil
	}
	fs.Func("replicas", "run each workload (raw aside) once per replica count in this comma-separated list, side by side, e.g. 1,3; rows are named workload/rN (env DFLOCK_REPLICAS; default 1; the embedded fleet has 3 servers, so at most 3)", setReplicas)
	if v := getenv("DFLOCK_REPLICAS"); v != "" {
		if err := setReplicas(v); err != nil {
			return errUsage{err: fmt.Errorf("DFLOCK_REPLICAS=%q: %v", v, err)}
		}
	}
	extra, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(extra) > 0 {
		return usageError(fs, "unexpected arguments: %s", strings.Join(extra, " "))
	}
	if err := checkBenchFlags(&cfg, splitList(workloads)); err != nil {
		return usageError(fs, "%v", err)
	}
	serversGiven := getenv("DFLOCK_SERVERS") != ""
	fs.Visit(func(f *flag.Flag) { serversGiven = serversGiven || f.Name == "servers" })
	if serversGiven {
		lc, err := cf.config()
		if err != nil {
			return err
		}
		cfg.Servers = lc.Servers
		cfg.Pool.TLS, cfg.Pool.AuthToken, cfg.Pool.ServerReadTimeout = lc.Pool.TLS, lc.Pool.AuthToken, lc.Pool.ServerReadTimeout
	} else if exe, err := os.Executable(); err == nil && !testing.Testing() {
		// The embedded fleet runs in a second dflock so that getrusage,
		// and so cpu/op, sees the client alone. A test binary is no
		// dflock: started again it would run the tests, not serve, so
		// there (and without an executable to start) the fleet stays in
		// this process and the report marks cpu/op as counting it.
		cfg.FleetCommand = func() *exec.Cmd { return exec.Command(exe, "bench") }
	}
	cfg.Workloads = splitList(workloads)
	if len(cfg.Workloads) == 0 {
		// Given, but empty: the default (all) was not asked for.
		return usageError(fs, "--workloads %q names no workload (from %s)", workloads, strings.Join(bench.Workloads(), ","))
	}
	if cfg.Reshard {
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "strategy":
				cfg.ReshardStrategies = []string{cfg.Strategy}
			case "hold":
				cfg.ReshardHeld = cfg.HoldMany
			case "workloads", "replicas":
				err = usageError(fs, "--%s does not go with --reshard, which runs its own workload without replicas", f.Name)
			}
		})
		if err != nil {
			return err
		}
	}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		cfg.Progress = stderr
	}
	if *metricsAddr != "" {
		ms, err := serveMetrics(*metricsAddr, "dflock bench", stderr)
		if err != nil {
			return err
		}
		defer ms.close()
		cfg.MeterProvider = ms.Provider()
	}
	var html *os.File
	if *htmlFile != "" {
		// Opened before the run, so that a path that cannot be written
		// fails now, not after it.
		if html, err = os.Create(*htmlFile); err != nil {
			return fmt.Errorf("--html: %w", err)
		}
		defer func() {
			if html != nil {
				html.Close()
				os.Remove(*htmlFile) // nothing measured to write
			}
		}()
	}
	rep, err := bench.Run(ctx, cfg)
	if rep != nil && len(rep.Results) > 0 {
		// Even a run that stopped prints what it measured: the figures
		// of the workload that failed show how it failed, and the report
		// says where the run stopped.
		if werr := writeReport(stdout, rep, asJSON); err == nil {
			err = werr
		}
		if html != nil {
			if werr := writeHTML(html, rep); err == nil {
				err = werr
			}
			html = nil
		}
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return &commandError{err: err, code: exitInterrupted}
	}
	return &commandError{err: err, hint: hint(err, &cf)}
}

// checkBenchFlags says what is wrong with each flag of bench's command
// line that bench.Config would refuse, or silently read as its default
// (a 0), in one message naming the flags.
func checkBenchFlags(cfg *bench.Config, workloads []string) error {
	var bad []string
	problem := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	if cfg.Pool.MaxConns < 2 {
		problem("--conns %d: at least 2 (a shared connection, and one for blocking requests)", cfg.Pool.MaxConns)
	}
	for _, c := range []struct {
		flag string
		n    int
	}{{"workers", cfg.Workers}, {"keys", cfg.Keys}, {"hold", cfg.HoldMany}} {
		if c.n < 1 {
			problem("--%s %d: at least 1", c.flag, c.n)
		}
	}
	if cfg.Duration <= 0 {
		problem("--duration %v: must be more than 0", cfg.Duration)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"warmup", cfg.Warmup}, {"lease", cfg.Lease}} {
		if d.v < 0 {
			problem("--%s %v: must not be negative", d.flag, d.v)
		}
	}
	if !slices.Contains(shard.Names(), cfg.Strategy) {
		problem("--strategy %q: one of %s", cfg.Strategy, strings.Join(shard.Names(), ", "))
	}
	for _, w := range workloads {
		if !slices.Contains(bench.Workloads(), w) {
			problem("--workloads: no workload %q (there are %s)", w, strings.Join(bench.Workloads(), ","))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return errors.New(strings.Join(bad, "; "))
}

// exitInterrupted is the exit code of a run cut short by SIGINT or
// SIGTERM: 128 + SIGINT, as shells report a command killed by it.
const exitInterrupted = 130

func writeReport(w io.Writer, rep *bench.Report, asJSON bool) error {
	if asJSON {
		return rep.WriteJSON(w)
	}
	if err := rep.WriteTable(w); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w)
	return err
}

// writeHTML writes rep's HTML page to f, and closes it.
func writeHTML(f *os.File, rep *bench.Report) error {
	if err := rep.WriteHTML(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
