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
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testproxy"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// stress runs clients × workers contending for keys while faults are
// injected, and checks mutual exclusion over everything they held. It
// runs in a synctest bubble: duration, leases, holds, pauses and faults
// are virtual time, which moves only when every goroutine waits. What a
// run costs in real time is the work it does (operations, renewals,
// reconnections), not the time it covers: holds, pauses between
// operations and the fault interval set how much work each virtual
// second holds.
type stress struct {
	clients, workers, keys, limit int
	lease                         time.Duration
	duration                      time.Duration
	// hold: most holds last up to hold (default 20 ms), one in ten up to
	// twice the lease, so that renewal must work. think: after each
	// release, a worker pauses up to think (default none).
	hold, think time.Duration
	faults      []fault
	// faultEvery: faults come every faultEvery to twice that (default
	// 200 ms).
	faultEvery time.Duration
	// servers in the fleet (default 2), and Config.Replicas (default 1).
	servers, replicas int
	// proxied puts a testproxy before each server, for blackhole faults.
	proxied bool
	// settle, when set, makes faults one at a time: each runs to its end
	// (a stall or a blackhole too), then the fleet has settle to recover
	// before the next.
	settle time.Duration
	// split gives each client a server of its own, which breaks mutual
	// exclusion on purpose: the checker must see it.
	split bool
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
	ops, acquired, faults int64
	// lost: losses the clients declared; seenLost, holders that saw Lost
	// while holding; releaseLost, releases that found a lock lost
	// before its first renewal was due, with no loss seen.
	lost, seenLost, releaseLost int64
	// unseen: claims declared lost before their holder looked;
	// unmatched: holders that saw Lost but whose loss no declaration
	// named (the checker then ends the claim when the holder woke).
	unseen, unmatched int64
	falseLosses       int64
	lossesFromFull    int64 // losses of locks that held every replica
	falseDetails      []string
	violations        []violation
	// virtual is the virtual time the run covered, real what it took.
	virtual, real time.Duration
}

// virtualDetectionWindow bounds how long after a server closes a
// connection (and hands its locks on) the holder may still claim them:
// the time its client takes to read the close. The protocol has no
// fencing, so the window exists (such claims overlap in the logical
// order), but in a bubble a close travels at once and the client's
// reader reads it before the clock can move: it takes no virtual time.
const virtualDetectionWindow = 0

// notInherent returns the overlaps that are not the disconnect-detection
// window (the earlier claim ended by loss, within virtualDetectionWindow).
func (r stressResult) notInherent() []string {
	var out []string
	for _, v := range r.violations {
		if !v.byLoss || v.overlap > virtualDetectionWindow {
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

// run runs s in a synctest bubble of its own, logs one line of figures
// (and the first few false losses and overlaps), and returns them.
func (s stress) run(t *testing.T) stressResult {
	t.Helper()
	var res stressResult
	began := time.Now()
	synctest.Test(t, func(t *testing.T) { res = s.inBubble(t) })
	res.real = time.Since(began)
	t.Logf("%s: %v of virtual time in %v: %d operations, %d acquired, %d lost (%d false, %d seen by their holder, %d found by a release, %d before their holder looked), %d faults, %d overlaps (longest %v)",
		t.Name(), res.virtual, res.real.Round(time.Millisecond), res.ops, res.acquired, res.lost, res.falseLosses, res.seenLost, res.releaseLost, res.unseen, res.faults, len(res.violations), res.longestOverlap())
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

// inBubble is the run itself; t is the bubble's.
func (s stress) inBubble(t *testing.T) stressResult {
	s.defaults()
	f := newVirtualFleet(t, max(s.servers, 2), fakeserver.Config{LeaseSweepInterval: 50 * time.Millisecond})
	targets := make([]faultTarget, len(f.addrs))
	addrs := slices.Clone(f.addrs)
	detector := newLossDetector(t, f)
	for i := range targets {
		targets[i].srv = f.server(t, i)
		if s.proxied {
			targets[i].proxy = testproxy.StartWith(t, f.addrs[i], testproxy.Config{Listen: f.mem.Net.Listen, Dial: f.mem.Net.Dial})
			addrs[i] = targets[i].proxy.Addr()
			detector.servers[targets[i].proxy.Addr()] = targets[i].srv
		}
	}
	h := newHistory()
	var res stressResult
	var ops, acquired, seenLost, releaseLost, unmatched, faults, logged atomic.Int64
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.duration)
	defer cancel()

	var wg sync.WaitGroup
	for ci := range s.clients {
		// Fewer exclusive connections than workers: connections kept by
		// locks held after a wait outnumber the idle ones the pool keeps,
		// so surplus ones are closed as their locks end.
		servers := addrs
		if s.split {
			servers = addrs[ci%len(addrs) : ci%len(addrs)+1]
		}
		c := f.client(t, lock.Config{Servers: servers, Replicas: s.replicas, ReplicaTimeout: 100 * time.Millisecond, Pool: pool.Config{MaxConns: 3, SharedConns: 1}})
		watchLosses(c, detector.check, h.declare)
		for wi := range s.workers {
			wg.Go(func() {
				w := worker{s: s, c: c, h: h, rng: rand.New(rand.NewPCG(uint64(ci), uint64(wi))), name: fmt.Sprintf("c%d/w%d", ci, wi), logged: &logged}
				for ctx.Err() == nil {
					ops.Add(1)
					switch w.once(ctx, t) {
					case outcomeFailed:
						// A refused dial fails at once, and a loop that
						// never waits would stop the clock.
						pause(ctx, time.Duration(10+w.rng.IntN(40))*time.Millisecond)
						continue
					case outcomeSeenLost:
						seenLost.Add(1)
					case outcomeSeenUnmatched:
						seenLost.Add(1)
						unmatched.Add(1)
					case outcomeReleaseLost:
						releaseLost.Add(1)
					}
					acquired.Add(1)
					if s.think > 0 {
						pause(ctx, time.Duration(w.rng.Int64N(int64(s.think))))
					}
				}
			})
		}
	}
	if len(s.faults) > 0 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(7, 7))
			for pause(ctx, s.faultEvery+time.Duration(rng.Int64N(int64(s.faultEvery)))) {
				fl := s.faults[rng.IntN(len(s.faults))]
				if s.settle > 0 {
					// One at a time: every kind in turn.
					fl = s.faults[faults.Load()%int64(len(s.faults))]
				}
				fl.do(targets[rng.IntN(len(targets))], rng, s.settle > 0)
				faults.Add(1)
				if s.settle > 0 && !pause(ctx, s.settle) {
					return
				}
			}
		})
	}
	wg.Wait()
	res.virtual = time.Since(began)
	for _, ft := range targets {
		ft.srv.Unstall()
	}
	res.ops, res.acquired, res.faults = ops.Load(), acquired.Load(), faults.Load()
	res.lost, res.seenLost, res.releaseLost = detector.reported.Load(), seenLost.Load(), releaseLost.Load()
	res.unmatched = unmatched.Load()
	res.violations = h.violations()
	h.mu.Lock()
	res.unseen = int64(h.unseen)
	h.mu.Unlock()
	res.falseLosses, res.falseDetails = detector.falseLosses()
	res.lossesFromFull = detector.fromFull.Load()
	return res
}

func (s *stress) defaults() {
	if s.hold == 0 {
		s.hold = 20 * time.Millisecond
	}
	if s.faultEvery == 0 {
		s.faultEvery = 200 * time.Millisecond
	}
}

// worker is one of a stress run's goroutines.
type worker struct {
	s    stress
	c    *lock.Client
	h    *history
	rng  *rand.Rand
	name string
	// logged counts the losses the run's workers logged.
	logged *atomic.Int64
}

type outcome int

const (
	outcomeFailed        outcome = iota // not acquired
	outcomeReleased                     // held, then released
	outcomeSeenLost                     // held until its holder saw it lost
	outcomeSeenUnmatched                // the same, with no declaration found
	outcomeReleaseLost                  // its release found it lost early
)

// once takes a random key, holds it a random while, and releases it,
// recording the claim.
func (w *worker) once(ctx context.Context, t *testing.T) outcome {
	s := w.s
	key := fmt.Sprintf("stress-%d", w.rng.IntN(s.keys))
	opts := []lock.Option{lock.LeaseTTL(s.lease), lock.AcquireTimeout(500 * time.Millisecond)}
	var l *lock.Lock
	if s.limit > 0 {
		l = w.c.Semaphore(key, s.limit, opts...).Lock
	} else {
		l = w.c.Lock(key, opts...)
	}
	ok, err := l.Acquire(ctx)
	if err != nil || !ok {
		return outcomeFailed
	}
	claim := w.h.hold(l, s.limit, w.name)
	gone := l.Lost()
	d := time.Duration(w.rng.Int64N(int64(s.hold)))
	if w.rng.IntN(10) == 0 {
		d = time.Duration(w.rng.Int64N(int64(2 * s.lease)))
	}
	hold := time.NewTimer(d)
	defer hold.Stop()
	var end stamp
	res := outcomeReleased
	byLoss := false
	select {
	case <-hold.C:
		end = w.h.now() // Release begins: no longer claimed
	case <-gone:
		end, byLoss, res = w.h.now(), true, outcomeSeenLost
		if w.logged.Add(1) <= 5 {
			t.Logf("%s lost %s: %v", w.name, key, l.Err())
		}
	}
	rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
	defer rcancel()
	// A release that finds the lock gone means the claim ended by loss
	// even if the hold ended first: the server had dropped the connection
	// before the client noticed.
	if err := l.Release(rctx); errors.Is(err, lock.ErrLockLost) {
		byLoss = true
		if res == outcomeReleased && end.at.Sub(claim.start.at) < s.lease/2 {
			// Not renewed yet: the lease alone cannot have run out, so
			// something ended the lock.
			res = outcomeReleaseLost
		}
	}
	if declared := claim.finish(end, byLoss); res == outcomeSeenLost && !declared {
		res = outcomeSeenUnmatched
	}
	return res
}

// pause waits d, or until ctx ends; it reports whether ctx is still
// live.
func pause(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// soakDuration is how long each case of a fault checker runs: long
// without -short, or DFLOCK_SOAK (a duration of virtual time) when set.
func soakDuration(t *testing.T, long, short time.Duration) time.Duration {
	if env := os.Getenv("DFLOCK_SOAK"); env != "" {
		d, err := time.ParseDuration(env)
		require.NoError(t, err, "DFLOCK_SOAK")
		return d
	}
	if testing.Short() {
		return short
	}
	return long
}

// Mutual exclusion on one server per key under each fault: with no fault
// or a stall, no two claims overlap at all; when a server closes its
// connections, only in the window its client takes to read the close,
// which in virtual time takes no time. No loss is false, and every loss a
// holder saw was declared by its client first.
func TestMutualExclusionUnderFaults(t *testing.T) {
	cases := []struct {
		name string
		s    stress
		// disconnects: the server closes holders' connections, which
		// opens the detection window.
		disconnects bool
	}{
		{"no faults", stress{faults: nil}, false},
		// Stalls of 1.5-2.5 s every 1.5-3 s, so that holders also take
		// locks between them.
		{"stalled server", stress{faults: []fault{stallFault}, faultEvery: 1500 * time.Millisecond}, false},
		{"dropped connections", stress{faults: []fault{dropFault}}, true},
		{"restarted server", stress{faults: []fault{restartFault}}, true},
		{"semaphore, all faults", stress{limit: 3, faults: []fault{dropFault, stallFault, restartFault}}, true},
	}
	d := soakDuration(t, time.Minute, 10*time.Second)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			s.clients, s.workers, s.keys, s.lease, s.duration = 3, 6, 4, time.Second, d
			res := s.run(t)
			assert.GreaterOrEqual(t, res.virtual, d)
			assert.Positive(t, res.acquired)
			assert.Zero(t, res.falseLosses, "a lock reported lost while the server still held it, with no fault")
			assert.Zero(t, res.unmatched, "a holder saw a loss its client never declared")
			if len(s.faults) == 0 {
				assert.Zero(t, res.lost+res.releaseLost, "with no fault nothing ends a lock but its holder")
			} else {
				assert.Positive(t, res.faults)
			}
			if !c.disconnects {
				assert.Empty(t, res.violations)
				return
			}
			assert.Empty(t, res.notInherent(), "every overlap must be a holder learning of its closed connection, which takes no virtual time")
		})
	}
}

// The harness can fail: two clients that each lock the keys on a
// server of its own hold them at once, and the checker, in the logical
// order of a bubble, finds those overlaps, none of them a loss.
func TestStressFindsOverlaps(t *testing.T) {
	s := stress{clients: 2, workers: 2, keys: 2, lease: time.Second, duration: 10 * time.Second, split: true}
	res := s.run(t)
	require.NotEmpty(t, res.violations)
	assert.NotEmpty(t, res.notInherent())
	for _, v := range res.violations {
		assert.False(t, v.byLoss, v.text)
	}
}

// A soak: a mixed workload with random faults (dropped connections,
// stalls past the lease, restarts, kills, blackholes through a proxy) for
// 10 minutes of virtual time (one with -short; DFLOCK_SOAK sets
// another). It checks mutual exclusion and loss reporting, and, as the
// bubble ends only when every goroutine it started has, that closing
// the clients and servers leaves none behind.
func TestSoak(t *testing.T) {
	s := stress{clients: 3, workers: 6, keys: 6, lease: time.Second, duration: soakDuration(t, 10*time.Minute, time.Minute),
		think: 20 * time.Millisecond, faultEvery: 500 * time.Millisecond, proxied: true,
		faults: []fault{dropFault, stallFault, restartFault, killFault, blackholeFault}}
	res := s.run(t)
	assert.GreaterOrEqual(t, res.virtual, s.duration)
	assert.Positive(t, res.acquired)
	// A fault at least every 2×faultEvery plus the longest fault (a
	// blackhole of up to 2.5 s).
	assert.GreaterOrEqual(t, res.faults, int64(s.duration/(2*s.faultEvery+2500*time.Millisecond)), "faults all along")
	assert.Zero(t, res.falseLosses, "a lock reported lost while the server still held it, with no fault")
	assert.Zero(t, res.unmatched, "a holder saw a loss its client never declared")
	assert.Empty(t, res.notInherent(), "every overlap must be a holder learning of its closed connection, which takes no virtual time")
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
