package bench

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/shard"
)

// Defaults of the reshard run.
const (
	reshardClients = 4
	reshardHeld    = 4_000
	// reshardHeldLease outlasts a default run, so that no renewal of the
	// held locks falls in one phase and not another.
	reshardHeldLease = time.Minute
)

// The phases of one fleet change, as the report names them.
var reshardPhases = [...]string{"before", "during", "after"}

// runReshard measures fleet changes under load (Config.Reshard): for each
// strategy, the fleet grows by its last server and shrinks back, while
// clients run acquire+release pairs on Keys keys and hold
// Config.ReshardHeld locks. In each change every client enters the
// transition at its own moment, then, once all have, leaves it at its
// own (see lock.Client.Reconfigure). Each change gives three results:
// before, during (first Reconfigure to last Commit) and after, each
// Duration long.
func runReshard(ctx context.Context, cfg Config, servers []string, newClient func(shard.Strategy) (*lock.Client, error)) ([]Result, error) {
	if len(servers) < 2 {
		return nil, fmt.Errorf("reshard needs at least 2 servers: it removes the last and adds it back")
	}
	var out []Result
	for _, name := range cfg.ReshardStrategies {
		small, err := shard.ByName(name, servers[:len(servers)-1])
		if err != nil {
			return out, err
		}
		big, err := shard.ByName(name, servers)
		if err != nil {
			return out, err
		}
		res, err := reshardOne(ctx, cfg, name, small, big, newClient)
		out = append(out, res...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// reshardOne runs one strategy's grow and shrink.
func reshardOne(ctx context.Context, cfg Config, name string, small, big shard.Strategy, newClient func(shard.Strategy) (*lock.Client, error)) ([]Result, error) {
	nc := cfg.ReshardClients
	clients := make([]*lock.Client, nc)
	var lost atomic.Int64
	for i := range clients {
		c, err := newClient(small)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients[i] = c
	}
	requests := func() uint64 {
		var n uint64
		for _, c := range clients {
			n += requestsOf(c)()
		}
		return n
	}
	onLost := lock.OnLost(func(string, error) { lost.Add(1) })

	// The held locks, taken before anything is measured.
	held := cfg.ReshardHeld
	locks := make([]*lock.Lock, held)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < held; i += 64 {
				l := clients[i%nc].Lock("reshard-held-"+strconv.Itoa(i), lock.LeaseTTL(reshardHeldLease), onLost)
				ok, err := l.Acquire(ctx)
				if err == nil && !ok {
					err = lock.ErrTimeout
				}
				if err != nil {
					errs <- err
					return
				}
				locks[i] = l
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("taking the held locks: %w", err)
	}
	defer func() {
		for _, l := range locks {
			l.Close()
		}
	}()

	// The traffic: workers spread over the clients, each op tallied in
	// the phase it began in.
	const phases = 2 * len(reshardPhases) // grow, then shrink
	var phase atomic.Int32
	phase.Store(-1) // the warm-up
	tallies := make([][]*tally, phases)
	for p := range tallies {
		tallies[p] = make([]*tally, cfg.Workers)
		for w := range tallies[p] {
			tallies[p][w] = newTally()
		}
	}
	ops := make([]atomic.Int64, phases)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	lease := lock.LeaseTTL(cmp.Or(cfg.Lease, pairLease))
	for w := range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%nc]
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var bo backoff
			for wctx.Err() == nil {
				p := phase.Load()
				start := time.Now()
				l := c.Lock("reshard-"+strconv.Itoa(rng.IntN(cfg.Keys)), lease, onLost, lock.AcquireTimeout(30*time.Second))
				ok, err := l.Acquire(wctx)
				if err == nil && ok {
					err = l.Release(wctx)
				} else {
					err = orTimeout(err)
				}
				switch {
				case wctx.Err() != nil:
					return
				case p < 0:
				case err != nil:
					tallies[p][w].fail(err)
					bo.wait(wctx, time.Time{})
					continue
				default:
					tallies[p][w].hist.RecordValue(int64(time.Since(start)))
					ops[p].Add(1)
				}
				bo.reset()
			}
		}()
	}

	// The timeline: each phase Duration long; in "during", the clients
	// enter the transition one by one over its first half and leave it
	// over its second.
	cpus := make([]cpuSpan, phases)
	spans := make([]time.Duration, phases)
	moved := make([]int, 2)
	sleep := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-ctx.Done():
			return false
		}
	}
	var runErr error
	run := func() {
		if !sleep(cfg.Warmup) {
			return
		}
		for change, to := range []shard.Strategy{big, small} {
			from := small
			if change == 1 {
				from = big
			}
			if n, err := movedKeys(locks, from, to); err == nil {
				moved[change] = n
			}
			for ph := range reshardPhases {
				p := change*len(reshardPhases) + ph
				cpus[p] = cpuSpan{requests: requests}
				began := time.Now()
				cpus[p].start()
				phase.Store(int32(p))
				if ph != 1 {
					if !sleep(cfg.Duration) {
						return
					}
				} else {
					gap := cfg.Duration / time.Duration(2*nc)
					for _, c := range clients {
						if !sleep(gap) {
							return
						}
						if runErr = c.Reconfigure(ctx, to); runErr != nil {
							return
						}
					}
					for _, c := range clients {
						if !sleep(gap) {
							return
						}
						if runErr = c.Commit(ctx); runErr != nil {
							return
						}
					}
				}
				cpus[p].stop()
				spans[p] = time.Since(began)
			}
		}
	}
	run()
	stop()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if runErr != nil {
		return nil, runErr
	}

	var out []Result
	for change, label := range []string{growLabel(small, big), growLabel(big, small)} {
		var base float64
		for ph, phName := range reshardPhases {
			p := change*len(reshardPhases) + ph
			res := summarise(fmt.Sprintf("%s %s %s", name, label, phName), "acquire+release of a key drawn from "+strconv.Itoa(cfg.Keys), tallies[p], ops[p].Load(), spans[p], &cpus[p])
			switch ph {
			case 0:
				base = res.ReqPerOp
			case 1:
				// What the transition cost beyond the traffic's own
				// requests: taking moving keys twice, and the held locks
				// following.
				total := res.ReqPerOp * float64(res.Ops)
				extra := total - base*float64(res.Ops)
				res.Extra = map[string]float64{"held locks moved": float64(moved[change])}
				if total > 0 {
					res.Extra["extra requests %"] = float64(int64(1000*extra/total)) / 10
				}
			case 2:
				res.Extra = map[string]float64{"lost": float64(lost.Load())}
			}
			out = append(out, res)
		}
	}
	return out, nil
}

// growLabel names a change by its server counts: "3→4".
func growLabel(from, to shard.Strategy) string {
	return fmt.Sprintf("%d→%d", len(from.Servers()), len(to.Servers()))
}

// movedKeys counts the held locks whose server changes from one
// membership to the other.
func movedKeys(locks []*lock.Lock, from, to shard.Strategy) (int, error) {
	keys := make([]string, len(locks))
	for i, l := range locks {
		keys[i] = l.Key()
	}
	m, err := shard.Moves(keys, from, to)
	return len(m), err
}

// reshardClient makes a client for the reshard run.
func reshardClient(cfg Config) func(shard.Strategy) (*lock.Client, error) {
	return func(s shard.Strategy) (*lock.Client, error) {
		return lock.New(lock.Config{Strategy: s, Pool: cfg.Pool, MeterProvider: cfg.MeterProvider, Logger: quiet})
	}
}
