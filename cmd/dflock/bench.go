package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/term"

	"github.com/dflock-go/dflock/bench"
)

// runBench runs the benchmark harness and prints its report.
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if getenv(bench.FleetEnv) != "" {
		// This process is a parent bench's fleet (see below).
		return bench.ServeFleet(os.Stdin, stdout)
	}
	fs := flag.NewFlagSet("dflock bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg       bench.Config
		cf        clientFlags
		workloads string
		asJSON    bool
	)
	cf.register(fs, getenv)
	fs.Lookup("servers").Usage = "comma-separated servers to measure (default: an embedded fleet of 3 fakeservers in a child process; env DFLOCK_SERVERS)"
	fs.StringVar(&cfg.Strategy, "strategy", "stable", "stable, consistent or rendezvous")
	fs.IntVar(&cfg.Conns, "conns", 16, "most connections per server")
	fs.IntVar(&cfg.Workers, "workers", 64, "closed-loop workers")
	fs.DurationVar(&cfg.Duration, "duration", 2*time.Second, "measured run of each workload")
	fs.DurationVar(&cfg.Warmup, "warmup", 300*time.Millisecond, "unmeasured run before each workload")
	fs.IntVar(&cfg.Keys, "keys", 10_000, "key space of the zipf workload")
	fs.IntVar(&cfg.HoldMany, "hold", 20_000, "locks held by the hold-many workload")
	fs.DurationVar(&cfg.Lease, "lease", 10*time.Second, "lease of every lock")
	fs.StringVar(&workloads, "workloads", strings.Join(bench.Workloads(), ","), "workloads to run")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	serversGiven := getenv("DFLOCK_SERVERS") != ""
	fs.Visit(func(f *flag.Flag) { serversGiven = serversGiven || f.Name == "servers" })
	if serversGiven {
		lc, err := cf.config()
		if err != nil {
			return err
		}
		cfg.Servers, cfg.AuthToken, cfg.TLS = lc.Servers, lc.AuthToken, lc.TLS
	} else if exe, err := os.Executable(); err == nil && !testing.Testing() {
		// The embedded fleet runs in a second dflock so that getrusage,
		// and so cpu/op, sees the client alone. A test binary is no
		// dflock: started again it would run the tests, not serve, so
		// there (and without an executable to start) the fleet stays in
		// this process and the report marks cpu/op as counting it.
		cfg.FleetCommand = func() *exec.Cmd { return exec.Command(exe, "bench") }
	}
	cfg.Workloads = splitList(workloads)
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		cfg.Progress = stderr
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		return rep.WriteJSON(stdout)
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	return nil
}
