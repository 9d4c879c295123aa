package lock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testproxy"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// stress runs clients × workers contending for keys while faults are
// injected, and checks mutual exclusion over everything they held.
type stress struct {
	clients, workers, keys, limit int
	lease                         time.Duration
	duration                      time.Duration
	faults                        []fault
	// servers in the fleet (default 2), and Config.Replicas (default 1).
	servers, replicas int
	// proxied puts a testproxy before each server, for blackhole faults.
	proxied bool
	// settle, when set, makes faults one at a time: each runs to its end
	// (a stall or a blackhole too), then the fleet has settle to recover
	// before the next.
	settle time.Duration
}

// faultTarget is the server a fault hits, and its proxy when proxied.
type faultTarget struct {
	srv   *fakeserver.Server
	proxy *testproxy.Proxy
}

type fault struct {
	name string
	// do injects the fault; with stress.settle it returns once the fault
	// is over.
	do func(ft faultTarget, rng *rand.Rand, oneAtATime bool)
}

var (
	dropFault = fault{"drop connections", func(ft faultTarget, _ *rand.Rand, _ bool) { ft.srv.DropConnections() }}
	// A stall longer than the lease: holders must give up before the
	// server's sweep hands their locks on.
	stallFault = fault{"stall past the lease", func(ft faultTarget, rng *rand.Rand, oneAtATime bool) {
		d := time.Duration(1500+rng.IntN(1000)) * time.Millisecond
		ft.srv.Stall(d)
		if oneAtATime {
			time.Sleep(d)
		}
	}}
	restartFault = fault{"restart", func(ft faultTarget, _ *rand.Rand, _ bool) {
		ft.srv.Stop()
		ft.srv.Restart()
	}}
	// A server killed, down for a while, and back empty.
	killFault = fault{"kill", func(ft faultTarget, rng *rand.Rand, _ bool) {
		ft.srv.Stop()
		time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
		ft.srv.Restart()
	}}
	// Every byte to and from the server swallowed, connections open, for
	// longer than the lease; then the connections are reset, as a
	// firewall that forgot them would.
	blackholeFault = fault{"blackhole", func(ft faultTarget, rng *rand.Rand, _ bool) {
		// Clients give up what they hold there; the server, which sees
		// nothing, still holds it, and must not count that as false.
		ft.srv.NoteFault()
		ft.proxy.Partition(true)
		time.Sleep(time.Duration(1500+rng.IntN(1000)) * time.Millisecond)
		ft.proxy.Reset()
	}}
)

type stressResult struct {
	ops, acquired, lost, faults int64
	falseLosses                 int64
	lossesFromFull              int64 // losses of locks that held every replica
	falseDetails                []string
	violations                  []violation
}

// detectionWindow bounds how long after a server closes a connection (and
// hands its locks on) the holder may still claim them: the time its
// client takes to read the close. The protocol has no fencing, so this
// window cannot be zero; it must stay small.
const detectionWindow = 250 * time.Millisecond

// notInherent returns the overlaps that are not the disconnect-detection
// window (the earlier claim ended by loss, within detectionWindow).
func (r stressResult) notInherent() []string {
	var out []string
	for _, v := range r.violations {
		if !v.byLoss || v.overlap > detectionWindow {
			out = append(out, fmt.Sprintf("%s (overlap %v)", v.text, v.overlap))
		}
	}
	return out
}

func (r stressResult) longestOverlap() time.Duration {
	var d time.Duration
	for _, v := range r.violations {
		d = max(d, v.overlap)
	}
	return d
}

func (s stress) run(t *testing.T) stressResult {
	t.Helper()
	f := newFleet(t, max(s.servers, 2), fakeserver.Config{LeaseSweepInterval: 50 * time.Millisecond})
	targets := make([]faultTarget, len(f.addrs))
	addrs := slices.Clone(f.addrs)
	detector := newLossDetector(t, f)
	for i := range targets {
		targets[i].srv = f.server(t, i)
		if s.proxied {
			targets[i].proxy = testproxy.Start(t, f.addrs[i], nil)
			addrs[i] = targets[i].proxy.Addr()
			detector.servers[targets[i].proxy.Addr()] = targets[i].srv
		}
	}
	h := newHistory()
	var res stressResult
	var ops, acquired, lost, releaseLost, faults atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), s.duration)
	defer cancel()

	var wg sync.WaitGroup
	for ci := range s.clients {
		// Fewer exclusive connections than workers: connections kept by
		// locks held after a wait outnumber the idle ones the pool keeps,
		// so surplus ones are closed as their locks end.
		c := f.client(t, lock.Config{Servers: addrs, Replicas: s.replicas, ReplicaTimeout: 100 * time.Millisecond, Pool: pool.Config{MaxConns: 3, SharedConns: 1}})
		detector.watch(c)
		for wi := range s.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(ci), uint64(wi)))
				holder := fmt.Sprintf("c%d/w%d", ci, wi)
				for ctx.Err() == nil {
					key := fmt.Sprintf("stress-%d", rng.IntN(s.keys))
					opts := []lock.Option{lock.LeaseTTL(s.lease), lock.AcquireTimeout(500 * time.Millisecond)}
					var l *lock.Lock
					if s.limit > 0 {
						l = c.Semaphore(key, s.limit, opts...).Lock
					} else {
						l = c.Lock(key, opts...)
					}
					ops.Add(1)
					ok, err := l.Acquire(ctx)
					if err != nil || !ok {
						continue
					}
					start := time.Now()
					acquired.Add(1)
					gone := l.Lost()
					d := time.Duration(rng.IntN(20)) * time.Millisecond
					if rng.IntN(10) == 0 {
						// Some holds outlast the lease: renewal must work.
						d = time.Duration(rng.Int64N(int64(2 * s.lease)))
					}
					hold := time.NewTimer(d)
					var end time.Time
					byLoss := false
					select {
					case <-hold.C:
						end = time.Now() // Release begins: no longer claimed
					case <-gone:
						end, byLoss = time.Now(), true
						if lost.Add(1) <= 5 {
							t.Logf("lost %s: %v", key, l.Err())
						}
					}
					hold.Stop()
					rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
					// A release that finds the lock gone means the claim
					// ended by loss even if the hold ended first: the
					// server had dropped the connection before the client
					// noticed.
					if err := l.Release(rctx); errors.Is(err, lock.ErrLockLost) {
						byLoss = true
						if end.Sub(start) < s.lease/2 && !gotLost(gone) {
							// Not renewed yet: the lease alone cannot have
							// run out, so something ended the lock.
							if releaseLost.Add(1) <= 5 {
								t.Logf("release of %s found it lost: %v", key, err)
							}
						}
					}
					rcancel()
					h.record(key, s.limit, holder, start, end, byLoss)
				}
			}()
		}
	}
	if len(s.faults) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(7, 7))
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Duration(200+rng.IntN(300)) * time.Millisecond):
				}
				fl := s.faults[rng.IntN(len(s.faults))]
				if s.settle > 0 {
					// One at a time: every kind in turn.
					fl = s.faults[faults.Load()%int64(len(s.faults))]
				}
				fl.do(targets[rng.IntN(len(targets))], rng, s.settle > 0)
				faults.Add(1)
				if s.settle > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(s.settle):
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, ft := range targets {
		ft.srv.Unstall()
	}
	res.ops, res.acquired, res.lost, res.faults = ops.Load(), acquired.Load(), lost.Load()+releaseLost.Load(), faults.Load()
	res.violations = h.violations()
	res.falseLosses, res.falseDetails = detector.falseLosses()
	res.lossesFromFull = detector.fromFull.Load()
	t.Logf("%s: %d operations, %d acquired, %d lost (%d false), %d faults, %d overlaps (longest %v)", t.Name(), res.ops, res.acquired, res.lost, res.falseLosses, res.faults, len(res.violations), res.longestOverlap())
	for _, d := range res.falseDetails {
		t.Log("false loss:", d)
	}
	for i, v := range res.violations {
		if i < 10 {
			t.Log(v.text)
		}
	}
	return res
}

func TestMutualExclusionUnderFaults(t *testing.T) {
	cases := []struct {
		name string
		s    stress
		// disconnects: the server closes holders' connections, which
		// opens the detection window.
		disconnects bool
	}{
		{"no faults", stress{faults: nil}, false},
		{"stalled server", stress{faults: []fault{stallFault}}, false},
		{"dropped connections", stress{faults: []fault{dropFault}}, true},
		{"restarted server", stress{faults: []fault{restartFault}}, true},
		{"semaphore, all faults", stress{limit: 3, faults: []fault{dropFault, stallFault, restartFault}}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			s.clients, s.workers, s.keys, s.lease, s.duration = 3, 6, 4, time.Second, 3*time.Second
			res := s.run(t)
			assert.Positive(t, res.acquired)
			assert.Zero(t, res.falseLosses, "a lock reported lost while the server still held it, with no fault")
			if len(s.faults) == 0 {
				assert.Zero(t, res.lost, "with no fault nothing ends a lock but its holder")
			}
			if !c.disconnects {
				assert.Empty(t, res.violations)
				return
			}
			assert.Empty(t, res.notInherent(), "every overlap must be a holder learning of its closed connection within %v", detectionWindow)
		})
	}
}

// gotLost reports whether a Lost channel is closed.
func gotLost(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}
