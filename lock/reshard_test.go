package lock_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
)

// reshard runs a fleet change under load, in a synctest bubble (call run
// inside synctest.Test): clients that together hold
// `held` locks, and run traffic on hot keys (half of which move), go
// through the rollout's steps one client at a time, at different moments:
// every client into the transition, then every client out of it. Clients
// before and in the transition run together, then clients in and after
// it, as the contract allows.
type reshard struct {
	strategy string
	grow     bool // 3 servers to 4; else 4 to 3
	replicas int
	clients  int
	held     int // locks held throughout, over all clients
	workers  int // traffic workers per client
	hot      int // traffic keys
	// step is the virtual time between two clients' steps.
	step time.Duration
	// lease is the held locks' lease (renewed at half of it: a lease
	// shorter than the rollout is renewed during it), hold the longest a
	// traffic worker holds a hot key.
	lease, hold time.Duration
	// skipStep breaks the contract: each client goes through both steps
	// at once, so clients before the change and after it run together.
	skipStep bool
}

type reshardResult struct {
	acquired  int64
	violation []violation
	losses    int64
	renewals  uint64
}

func (r reshard) run(t *testing.T) reshardResult {
	t.Helper()
	began := time.Now()
	g := newVirtualGrown(t, r.strategy)
	if !r.grow {
		g.before, g.after = g.after, g.before
	}
	detector := newLossDetector(t, g.f)
	h := newHistory()
	clients := make([]*lock.Client, r.clients)
	for i := range clients {
		clients[i] = g.f.client(t, lock.Config{Strategy: g.before, Replicas: r.replicas, Pool: pool.Config{MaxConns: 8}})
		watchLosses(clients[i], detector.check, h.declare)
	}

	// The held locks, with a short lease, so that they are renewed as
	// their clients move; taken a few hundred at a time (TryLockMany), as
	// a service that holds thousands would.
	holdCtx := ctxFor(t, time.Minute)
	held := make([][]*lock.Lock, r.clients)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for ci, c := range clients {
		var keys []string
		for i := range r.held / r.clients {
			keys = append(keys, fmt.Sprintf("held-%d-%d", ci, i))
		}
		for chunk := range slices.Chunk(keys, 250) {
			wg.Go(func() {
				got, busy, err := c.TryLockMany(holdCtx, chunk, lock.LeaseTTL(r.lease))
				assert.NoError(t, err)
				assert.Empty(t, busy)
				mu.Lock()
				held[ci] = append(held[ci], got...)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	require.False(t, t.Failed())

	moved, stay := g.keys(t, "hot", r.hot/2, r.replicas)
	hot := append(moved, stay...)
	var acquired atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	for ci, c := range clients {
		for wi := range r.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(ci), uint64(wi)))
				who := fmt.Sprintf("c%d/w%d", ci, wi)
				for ctx.Err() == nil {
					key := hot[rng.IntN(len(hot))]
					l := c.Lock(key, lock.AcquireTimeout(500*time.Millisecond))
					var ok bool
					var err error
					if rng.IntN(4) == 0 {
						// Two-phase.
						var st lock.Status
						if st, err = l.Enqueue(ctx); err == nil {
							ok = st == lock.Acquired
							if st == lock.Queued {
								ok, err = l.Wait(ctx, 500*time.Millisecond)
							}
						}
					} else {
						ok, err = l.Acquire(ctx)
					}
					if err != nil || !ok {
						l.Close()
						// Never spin at one virtual instant.
						time.Sleep(time.Millisecond)
						continue
					}
					cl := h.hold(l, 0, who)
					acquired.Add(1)
					lost := false
					select {
					case <-time.After(time.Duration(rng.Int64N(int64(r.hold)))):
					case <-l.Lost():
						lost = true
					}
					cl.finish(h.now(), lost)
					rctx, cancel := context.WithTimeout(context.Background(), wait)
					assert.NoError(t, l.Release(rctx), "%s", key)
					cancel()
				}
			}()
		}
	}

	// The rollout: each client enters the transition at its own moment,
	// then, once all have, each leaves it at its own.
	rng := rand.New(rand.NewPCG(1, 2))
	mctx := ctxFor(t, time.Minute)
	time.Sleep(r.step)
	for _, ci := range rng.Perm(r.clients) {
		require.NoError(t, clients[ci].Reconfigure(mctx, g.after))
		if r.skipStep {
			require.NoError(t, clients[ci].Commit(mctx))
		}
		time.Sleep(r.step)
	}
	tr := g.transition(t)
	if !r.skipStep {
		eachHeld(t, held, func(l *lock.Lock) { assertFollows(t, l, tr, r.replicas) })
	}
	for _, ci := range rng.Perm(r.clients) {
		require.NoError(t, clients[ci].Commit(mctx))
		time.Sleep(r.step)
	}
	stop()
	wg.Wait()

	// Every held lock is still held, on its new servers, and the
	// servers agree.
	eachHeld(t, held, func(l *lock.Lock) {
		assert.False(t, gotLost(l.Lost()), "%s lost: %v", l.Key(), l.Err())
		assert.NotEmpty(t, l.Token())
		assertFollows(t, l, g.after, r.replicas)
		g.assertHeldOnServers(t, l)
	})
	eachHeld(t, held, func(l *lock.Lock) { assert.NoError(t, l.Release(mctx)) })
	detector.assertNoFalseLoss(t)
	res := reshardResult{acquired: acquired.Load(), violation: h.violations(), losses: detector.reported.Load(), renewals: renewals(clients)}
	t.Logf("%s: %d held throughout %v of virtual time, %d renewals, %d traffic acquisitions, %d overlaps, %d losses",
		t.Name(), r.held, time.Since(began), res.renewals, res.acquired, len(res.violation), res.losses)
	for i, v := range res.violation {
		if i < 10 {
			t.Log(v.text)
		}
	}
	return res
}

// eachHeld runs check on every lock of held, and on no more than five
// once the test has failed: thousands of failures say no more than five.
func eachHeld(t *testing.T, held [][]*lock.Lock, check func(l *lock.Lock)) {
	t.Helper()
	after := 0
	for _, ls := range held {
		for _, l := range ls {
			if t.Failed() {
				if after++; after > 5 {
					t.Errorf("stopped checking the held locks: the test failed")
					return
				}
			}
			check(l)
		}
	}
}

// renewals counts the renewals clients sent.
func renewals(clients []*lock.Client) uint64 {
	var n uint64
	for _, c := range clients {
		n += c.RenewalsSent()
	}
	return n
}

// The acceptance: clients go through a fleet change one by one while
// 10,000 locks are held and traffic flows: no overlap, no loss at all
// (no fault is injected, and in virtual time a busy machine cannot
// expire a lease), no false loss, every held lock valid on its new
// servers.
func TestFleetChangeUnderLoad(t *testing.T) {
	type tc struct {
		strategy string
		grow     bool
		replicas int
		held     int
	}
	// Virtual time takes no CPU, the locks do (about 0.6 ms each under
	// -race, three times that with three replicas): one case holds
	// 10,000, the others 1,000 locks (2,000 with three replicas each:
	// 6,000 grants).
	var cases []tc
	for _, s := range shard.Names() {
		for _, grow := range []bool{true, false} {
			cases = append(cases, tc{s, grow, 1, 1_000})
		}
	}
	cases[2].held = 10_000 // consistent/3to4/r1
	cases = append(cases, tc{"consistent", true, 3, 2_000}, tc{"stable", false, 3, 2_000})
	for _, c := range cases {
		dir := "3to4"
		if !c.grow {
			dir = "4to3"
		}
		t.Run(fmt.Sprintf("%s/%s/r%d", c.strategy, dir, c.replicas), func(t *testing.T) {
			r := reshard{strategy: c.strategy, grow: c.grow, replicas: c.replicas, clients: 4, held: c.held, workers: 4, hot: 16,
				step: 250 * time.Millisecond, lease: time.Second, hold: 20 * time.Millisecond}
			if testing.Short() {
				r.held, r.workers = 500, 2
			}
			synctest.Test(t, func(t *testing.T) {
				res := r.run(t)
				assert.Positive(t, res.acquired)
				assert.Zero(t, len(res.violation), "two holders at once (the first few are logged above)")
				assert.Zero(t, res.losses, "nothing but faults ends a lock")
				// The rollout lasts 9 steps, over four renewals of each held
				// grant.
				assert.GreaterOrEqual(t, res.renewals, uint64(4*r.held*r.replicas), "renewals during the change")
			})
		})
	}
}

// The checker sees what the rollout's steps prevent: clients that skip
// the transition, while others still run on the old membership, take
// moving keys twice.
func TestFleetChangeSkippingTheTransitionOverlaps(t *testing.T) {
	r := reshard{strategy: "rendezvous", grow: true, replicas: 1, clients: 4, held: 0, workers: 4, hot: 16, step: 300 * time.Millisecond, skipStep: true, lease: time.Second, hold: 20 * time.Millisecond}
	synctest.Test(t, func(t *testing.T) {
		res := r.run(t)
		assert.NotZero(t, len(res.violation), "clients before and after a change together must be able to overlap")
		assert.Zero(t, res.losses)
	})
}
