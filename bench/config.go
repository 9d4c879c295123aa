package bench

import (
	"fmt"
	"io"
	"os/exec"
	"slices"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
)

// Config says what to run. The zero value of each field is its default.
type Config struct {
	// Servers to measure. Default: an embedded fleet of 3 fakeservers on
	// loopback.
	Servers []string
	// FleetCommand, when set, runs the embedded fleet in the process it
	// returns rather than in this one, so that cpu/op is the client's
	// CPU alone. That process must call ServeFleet when it finds FleetEnv
	// set; Run sets it and owns the command's stdin and stdout. Unset,
	// the fleet shares this process and cpu/op counts the servers too.
	FleetCommand func() *exec.Cmd
	// Strategy is stable, consistent or rendezvous. Default stable.
	Strategy string
	// Pool configures the connections of every client to each server, as
	// lock.Config.Pool does: MaxConns the most per server (default
	// pool.DefaultMaxConns, 16), and TLS, AuthToken and ServerReadTimeout
	// for servers that need them. The raw baseline runs only without TLS
	// and a token.
	Pool pool.Config
	// Workers is the number of closed-loop workers. Default 64.
	Workers int
	// Duration of each workload's measured run. Default 2 s.
	Duration time.Duration
	// Warmup runs each workload unmeasured first. Default 300 ms.
	Warmup time.Duration
	// Keys is the key space of the zipf workload. Default 10,000.
	Keys int
	// Lease asked for by every lock, hold-many's included. Default 10 s,
	// but for hold-many half of Duration (at least 1 s), so that its
	// locks renew during the hold and renewals/s measures something (a
	// lease set longer than that may leave it no renewal to count).
	Lease time.Duration
	// HoldMany is how many locks the hold-many workload holds. Default
	// 20,000.
	HoldMany int
	// Workloads to run, by name. Default all of Workloads().
	Workloads []string
	// Replicas runs every workload but raw once per replica count given
	// (lock.Config.Replicas), side by side, named workload/rN. Default
	// [1], named plainly.
	Replicas []int
	// Reshard runs, in place of the workloads, fleet changes under load
	// (see runReshard): for each of ReshardStrategies (default all
	// three), the fleet grows by a server and shrinks back while
	// ReshardClients clients (default 4) run acquire+release pairs and
	// hold ReshardHeld locks (default 4,000). The embedded fleet has 4
	// servers for it; given Servers, the last one is the one that comes
	// and goes.
	Reshard bool
	// ReshardStrategies are the strategies Reshard measures, one after
	// another. Default all of shard.Names().
	ReshardStrategies []string
	// ReshardClients is how many clients run Reshard's load. Default 4.
	ReshardClients int
	// ReshardHeld is how many locks Reshard's clients hold through each
	// change. Default 4,000.
	ReshardHeld int
	// MeterProvider receives the clients' metrics (lock.Config's);
	// nil leaves them to OpenTelemetry's global provider.
	MeterProvider metric.MeterProvider
	// Meters runs every workload but raw once per metrics setting, side
	// by side, named workload/SETTING: "off" (the no-op provider, which
	// turns recording off), "global" (OpenTelemetry's global provider,
	// a no-op unless one is installed: the default) and "sdk" (the
	// OpenTelemetry SDK aggregating every instrument, as an exporter
	// would read it). Default: MeterProvider alone, rows named plainly.
	Meters []string
	// Progress, when set, receives a progress bar.
	Progress io.Writer

	// requests counts the requests the workload's client sent.
	requests func() uint64
}

// Workloads lists the workloads in the order they run.
func Workloads() []string {
	return []string{"raw", "distinct", "hot", "zipf", "two-phase", "semaphore", "try-many", "lock-all", "hold-many"}
}

func (c *Config) setDefaults() error {
	if c.Strategy == "" {
		c.Strategy = "stable"
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Pool.MaxConns, pool.DefaultMaxConns)
	def(&c.Workers, 64)
	def(&c.Keys, 10_000)
	def(&c.HoldMany, 20_000)
	if c.Duration == 0 {
		c.Duration = 2 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 300 * time.Millisecond
	}
	if len(c.Workloads) == 0 {
		c.Workloads = Workloads()
	}
	if len(c.Replicas) == 0 {
		c.Replicas = []int{1}
	}
	if len(c.ReshardStrategies) == 0 {
		c.ReshardStrategies = shard.Names()
	}
	def(&c.ReshardClients, reshardClients)
	def(&c.ReshardHeld, reshardHeld)
	for _, s := range c.ReshardStrategies {
		if !slices.Contains(shard.Names(), s) {
			return fmt.Errorf("bench: unknown strategy %q (have %v)", s, shard.Names())
		}
	}
	if c.ReshardClients < 1 || c.ReshardHeld < 0 {
		return fmt.Errorf("bench: reshard needs at least 1 client, and held locks not negative")
	}
	for _, w := range c.Workloads {
		if !slices.Contains(Workloads(), w) {
			return fmt.Errorf("bench: unknown workload %q (have %v)", w, Workloads())
		}
	}
	for _, m := range c.Meters {
		if !slices.Contains(meterSettings, m) {
			return fmt.Errorf("bench: unknown metrics setting %q (have %v)", m, meterSettings)
		}
	}
	for _, r := range c.Replicas {
		if r < 1 || r%2 == 0 {
			return fmt.Errorf("bench: replicas %d: each must be odd (1, 3, 5...)", r)
		}
	}
	if c.Pool.MaxConns < 2 || c.Workers < 1 || c.Keys < 1 || c.HoldMany < 1 || c.Duration < 0 || c.Warmup < 0 || c.Lease < 0 {
		return fmt.Errorf("bench: conns must be at least 2, workers, keys and hold-many at least 1, and duration, warm-up and lease not negative")
	}
	return nil
}
