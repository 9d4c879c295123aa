package lock_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/shard"
)

// grown is a fleet of four fake servers, and strategies by name over its
// first three (before) and all four (after).
type grown struct {
	f             *testFleet
	byAddr        map[string]*fakeserver.Server
	before, after shard.Strategy
}

// newGrown starts the four servers on loopback TCP.
func newGrown(t *testing.T, strategy string) *grown {
	t.Helper()
	return grownOn(t, newFleet(t, 4, fakeserver.Config{MaxLocks: 100_000}), strategy)
}

// newVirtualGrown starts the four servers on an in-memory network, for a
// test in a synctest bubble: leases and timeouts run on its clock.
func newVirtualGrown(t *testing.T, strategy string) *grown {
	t.Helper()
	return grownOn(t, newVirtualFleet(t, 4, fakeserver.Config{MaxLocks: 100_000}), strategy)
}

func grownOn(t *testing.T, f *testFleet, strategy string) *grown {
	t.Helper()
	g := &grown{f: f, byAddr: map[string]*fakeserver.Server{}}
	for i, a := range f.addrs {
		g.byAddr[a] = f.server(t, i)
	}
	var err error
	g.before, err = shard.ByName(strategy, f.addrs[:3])
	require.NoError(t, err)
	g.after, err = shard.ByName(strategy, f.addrs)
	require.NoError(t, err)
	return g
}

func (g *grown) client(t *testing.T, s shard.Strategy, replicas int) *lock.Client {
	t.Helper()
	return g.f.client(t, lock.Config{Strategy: s, Replicas: replicas})
}

// transition returns the transition from before to after.
func (g *grown) transition(t *testing.T) *shard.Transition {
	t.Helper()
	tr, err := shard.NewTransition(g.before, g.after)
	require.NoError(t, err)
	return tr
}

// movedKeys returns n keys whose replicas differ between before and
// after, and n that stay.
func (g *grown) keys(t *testing.T, prefix string, n, replicas int) (moved, stay []string) {
	t.Helper()
	for i := 0; len(moved) < n || len(stay) < n; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		m, err := shard.ReplicaMoves([]string{k}, g.before, g.after, replicas)
		require.NoError(t, err)
		switch {
		case len(m) > 0 && len(moved) < n:
			moved = append(moved, k)
		case len(m) == 0 && len(stay) < n:
			stay = append(stay, k)
		}
	}
	return moved, stay
}

// heldOnServers asserts that every grant l holds is held by its server.
func (g *grown) assertHeldOnServers(t *testing.T, l *lock.Lock) {
	t.Helper()
	for _, gr := range lock.GrantsOf(l) {
		st := g.byAddr[gr.Addr].TokenState(l.Key(), gr.Token)
		assert.True(t, st.Held && st.LeaseLeft > 0, "%s: %s does not hold it", l.Key(), gr.Addr)
	}
}

// servers returns key's servers of every route of s, as a sorted set.
func serversOf(t *testing.T, s shard.Strategy, key string, replicas int) []string {
	t.Helper()
	var out []string
	routes := [][]string{}
	if tr, ok := s.(*shard.Transition); ok {
		var err error
		routes, err = tr.Routes(key, replicas)
		require.NoError(t, err)
	} else {
		r, err := shard.Replicas(s, key, replicas)
		require.NoError(t, err)
		routes = append(routes, r)
	}
	for _, r := range routes {
		for _, a := range r {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	slices.Sort(out)
	return out
}

// holdAll acquires a lock on each of keys through c.
func holdAll(t *testing.T, c *lock.Client, keys []string) []*lock.Lock {
	t.Helper()
	locks := make([]*lock.Lock, len(keys))
	for i, k := range keys {
		locks[i] = c.Lock(k)
		mustAcquire(t, locks[i])
	}
	return locks
}

// assertFollows asserts that l is held on a quorum of each of its key's
// routes under s, and on no other server.
func assertFollows(t *testing.T, l *lock.Lock, s shard.Strategy, replicas int) {
	t.Helper()
	var routes [][]string
	if tr, ok := s.(*shard.Transition); ok {
		var err error
		routes, err = tr.Routes(l.Key(), replicas)
		require.NoError(t, err)
	} else {
		r, err := shard.Replicas(s, l.Key(), replicas)
		require.NoError(t, err)
		routes = [][]string{r}
	}
	on := l.HeldOn()
	all := serversOf(t, s, l.Key(), replicas)
	for _, a := range on {
		assert.Contains(t, all, a, "%s held on a server none of its routes has", l.Key())
	}
	for _, r := range routes {
		n := 0
		for _, a := range r {
			if slices.Contains(on, a) {
				n++
			}
		}
		assert.GreaterOrEqual(t, n, lock.Quorum(replicas, 1), "%s: held on %v, route %v", l.Key(), on, r)
	}
}

// A fleet change returns with every held lock on every replica of its
// new routes, not only a quorum: a replica its new route adds is taken by
// the step itself, a few locks at a time, not left to a background
// re-take per lock, started all at once (thousands of them in a large
// change, whose goroutines and requests held up the renewals behind them
// long enough to lose locks the servers still held). In virtual time,
// with the clock stopped: Reconfigure's return, not a retake later, put
// them there.
func TestReconfigureTakesEveryNewReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newVirtualGrown(t, "stable")
		g.before, g.after = g.after, g.before // 4 servers to 3
		c := g.client(t, g.before, 3)
		var locks []*lock.Lock
		for i := range 300 {
			l := c.Lock(fmt.Sprintf("every-%d", i))
			mustAcquire(t, l)
			locks = append(locks, l)
		}
		synctest.Wait()
		for _, l := range locks {
			require.Len(t, l.HeldOn(), 3)
		}
		ctx := ctxFor(t, wait)
		start := time.Now()
		require.NoError(t, c.Reconfigure(ctx, g.after))
		tr := g.transition(t)
		added := 0
		for _, l := range locks {
			want := serversOf(t, tr, l.Key(), 3)
			if len(want) > 3 {
				added++
			}
			assert.ElementsMatch(t, want, l.HeldOn(), "%s", l.Key())
		}
		require.Positive(t, added, "no key gained a replica: the test shows nothing")
		require.NoError(t, c.Commit(ctx))
		assert.Zero(t, time.Since(start), "no step waited")
		for _, l := range locks {
			want, err := shard.Replicas(g.after, l.Key(), 3)
			require.NoError(t, err)
			assert.ElementsMatch(t, want, l.HeldOn(), "%s", l.Key())
			g.assertHeldOnServers(t, l)
		}
	})
}

// A held lock follows its client through both steps: entering the
// transition it is also taken on the key's new servers, on commit it
// gives back the old ones; it is never released in between, and keys
// that do not move are not touched.
func TestReconfigureCarriesHeldLocks(t *testing.T) {
	for _, strategy := range shard.Names() {
		for _, replicas := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/r%d", strategy, replicas), func(t *testing.T) {
				g := newGrown(t, strategy)
				c := g.client(t, g.before, replicas)
				moved, stay := g.keys(t, "k", 20, replicas)
				var locks []*lock.Lock
				tokens := map[string]string{}
				for _, k := range append(slices.Clone(moved), stay...) {
					l := c.Lock(k)
					mustAcquire(t, l)
					locks = append(locks, l)
					tokens[k] = l.Token()
				}
				requestsBefore := requests(c)
				ctx := ctxFor(t, wait)
				require.NoError(t, c.Reconfigure(ctx, g.after))
				servers, previous := c.Membership()
				assert.Equal(t, g.after.Servers(), servers)
				assert.Equal(t, g.before.Servers(), previous)
				tr := g.transition(t)
				for _, l := range locks {
					assertFollows(t, l, tr, replicas)
					g.assertHeldOnServers(t, l)
					assert.NotEmpty(t, l.Token())
				}
				// Only the moved keys cost requests: one try-lock per new
				// server at most, with a few renewals besides.
				extra := requests(c) - requestsBefore
				assert.LessOrEqual(t, extra, uint64(len(moved)*replicas+len(locks)), "requests for the transition")

				require.NoError(t, c.Commit(ctx))
				servers, previous = c.Membership()
				assert.Equal(t, g.after.Servers(), servers)
				assert.Nil(t, previous)
				for _, l := range locks {
					assertFollows(t, l, g.after, replicas)
					g.assertHeldOnServers(t, l)
					select {
					case <-l.Lost():
						t.Fatalf("%s lost: %v", l.Key(), l.Err())
					default:
					}
				}
				for _, k := range stay {
					// Untouched: the same grants, the same token.
					l := locks[slices.Index(append(slices.Clone(moved), stay...), k)]
					assert.Equal(t, tokens[k], l.Token())
				}
				// The old servers no longer hold what moved.
				for _, k := range moved {
					for _, a := range serversOf(t, g.before, k, replicas) {
						if slices.Contains(serversOf(t, g.after, k, replicas), a) {
							continue
						}
						assert.Zero(t, keyHolders(g.byAddr[a], k), "%s still held on %s", k, a)
					}
				}
				for _, l := range locks {
					require.NoError(t, l.Release(ctx))
				}
			})
		}
	}
}

func requests(c *lock.Client) uint64 {
	var n uint64
	for _, s := range c.PoolStats() {
		n += s.Requests
	}
	return n
}

// keyHolders counts the holders of key on srv.
func keyHolders(srv *fakeserver.Server, key string) int {
	n := 0
	for _, l := range srv.Stats().Locks {
		if l.Key == key && l.OwnerConnID != 0 {
			n++
		}
	}
	return n
}

// Clients before and in the transition exclude each other, and so do
// clients in the transition and after it.
func TestTransitionExcludesNeighbours(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("r%d", replicas), func(t *testing.T) {
			g := newGrown(t, "consistent")
			m1 := g.client(t, g.before, replicas)
			tc := g.client(t, g.transition(t), replicas)
			m2 := g.client(t, g.after, replicas)
			moved, _ := g.keys(t, "x", 10, replicas)
			ctx := ctxFor(t, wait)
			for _, k := range moved {
				for _, pair := range [][2]*lock.Client{{m1, tc}, {tc, m1}, {tc, m2}, {m2, tc}} {
					a := pair[0].Lock(k)
					mustAcquire(t, a)
					ok, err := pair[1].Lock(k).TryAcquire(ctx)
					require.NoError(t, err)
					assert.False(t, ok, "%s taken twice", k)
					require.NoError(t, a.Release(ctx))
				}
			}
		})
	}
}

// What the rollout's steps prevent: a client before the change and one
// after it can both hold a moving key. The checker sees it.
func TestOldAndNewMembershipsTogetherOverlap(t *testing.T) {
	g := newGrown(t, "rendezvous")
	m1 := g.client(t, g.before, 1)
	m2 := g.client(t, g.after, 1)
	moved, _ := g.keys(t, "y", 5, 1)
	h := newHistory()
	for _, k := range moved {
		a, b := m1.Lock(k), m2.Lock(k)
		mustAcquire(t, a)
		start := time.Now()
		mustAcquire(t, b)
		h.record(k, 1, "m1", start, time.Now().Add(time.Millisecond), false)
		h.record(k, 1, "m2", start, time.Now().Add(time.Millisecond), false)
	}
	assert.Len(t, h.violations(), len(moved))
}

// A waiter queued behind the old owner while its client enters the
// transition holds the new servers too when it gets the lock.
func TestAcquireInFlightFollowsTheChange(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("r%d", replicas), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newVirtualGrown(t, "stable")
				holder := g.client(t, g.before, replicas)
				c := g.client(t, g.before, replicas)
				moved, _ := g.keys(t, "w", 1, replicas)
				k := moved[0]
				h := holder.Lock(k)
				mustAcquire(t, h)
				got := make(chan error, 1)
				l := c.Lock(k)
				go func() {
					ok, err := l.Acquire(ctxFor(t, wait))
					if err == nil && !ok {
						err = fmt.Errorf("not acquired")
					}
					got <- err
				}()
				synctest.Wait()
				require.Positive(t, waitersOn(g, k), "queued on the old owner")
				ctx := ctxFor(t, wait)
				require.NoError(t, c.Reconfigure(ctx, g.after))
				require.NoError(t, h.Release(ctx))
				require.NoError(t, <-got)
				assertFollows(t, l, g.transition(t), replicas)
				g.assertHeldOnServers(t, l)
				require.NoError(t, c.Commit(ctx))
				assertFollows(t, l, g.after, replicas)
				require.NoError(t, l.Release(ctx))
			})
		})
	}
}

// waitersOn counts the waiters for key across the fleet.
func waitersOn(g *grown, key string) int {
	n := 0
	for _, srv := range g.byAddr {
		for _, l := range srv.Stats().Locks {
			if l.Key == key {
				n += l.Waiters
			}
		}
	}
	return n
}

// Two-phase acquires in the transition: queued on the old owner, Wait
// takes the new one too.
func TestTwoPhaseInTransition(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("r%d", replicas), func(t *testing.T) {
			g := newGrown(t, "consistent")
			tc := g.client(t, g.transition(t), replicas)
			other := g.client(t, g.transition(t), replicas)
			moved, _ := g.keys(t, "e", 3, replicas)
			ctx := ctxFor(t, wait)
			for _, k := range moved {
				l := tc.Lock(k)
				st, err := l.Enqueue(ctx)
				require.NoError(t, err)
				require.Equal(t, lock.Acquired, st)
				assertFollows(t, l, g.transition(t), replicas)

				o := other.Lock(k)
				st, err = o.Enqueue(ctx)
				require.NoError(t, err)
				require.Equal(t, lock.Queued, st)
				require.NoError(t, l.Release(ctx))
				ok, err := o.Wait(ctx, wait)
				require.NoError(t, err)
				require.True(t, ok)
				assertFollows(t, o, g.transition(t), replicas)
				g.assertHeldOnServers(t, o)
				require.NoError(t, o.Release(ctx))
			}
		})
	}
}

// Abort gives back the new servers; Reconfigure refuses a second change
// before the first ends; Commit and Abort without one do nothing.
func TestAbortAndMisuse(t *testing.T) {
	g := newGrown(t, "rendezvous")
	c := g.client(t, g.before, 1)
	ctx := ctxFor(t, wait)
	require.NoError(t, c.Commit(ctx))
	require.NoError(t, c.Abort(ctx))
	moved, _ := g.keys(t, "a", 5, 1)
	locks := holdAll(t, c, moved)
	same, err := shard.NewRendezvous(g.f.addrs[:3])
	require.NoError(t, err)
	require.NoError(t, c.Reconfigure(ctx, same), "the fleet it is on")
	_, previous := c.Membership()
	require.Nil(t, previous, "no transition to the same fleet")
	require.NoError(t, c.Reconfigure(ctx, g.after))
	assert.ErrorIs(t, c.Reconfigure(ctx, g.after), lock.ErrInTransition)
	require.NoError(t, c.Abort(ctx))
	servers, previous := c.Membership()
	assert.Equal(t, g.before.Servers(), servers)
	assert.Nil(t, previous)
	for _, l := range locks {
		assertFollows(t, l, g.before, 1)
		g.assertHeldOnServers(t, l)
		to, _ := g.after.Server(l.Key())
		assert.Zero(t, keyHolders(g.byAddr[to], l.Key()))
	}
	// Too few servers for the replicas: refused, nothing changes.
	c3 := g.client(t, g.after, 3)
	small, err := shard.NewRendezvous(g.f.addrs[:2])
	require.NoError(t, err)
	assert.ErrorIs(t, c3.Reconfigure(ctx, small), lock.ErrInvalid)
	_, previous = c3.Membership()
	assert.Nil(t, previous)
	require.NoError(t, c3.Close())
	assert.ErrorIs(t, c3.Commit(ctx), lock.ErrClosed)
	assert.ErrorIs(t, c3.Abort(ctx), lock.ErrClosed)
	assert.ErrorIs(t, c3.Reconfigure(ctx, g.before), lock.ErrClosed)
}

// A held lock whose new server is held by someone else (a client that
// broke the rollout's rules) cannot follow: after its acquire timeout
// (100 ms, a second on the wire) it is lost, and Reconfigure says so.
func TestReconfigureLosesWhatCannotFollow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newVirtualGrown(t, "stable")
		c := g.client(t, g.before, 1)
		intruder := g.client(t, g.after, 1)
		moved, _ := g.keys(t, "z", 1, 1)
		ctx := ctxFor(t, wait)
		l := c.Lock(moved[0], lock.AcquireTimeout(100*time.Millisecond))
		mustAcquire(t, l)
		in := intruder.Lock(moved[0])
		mustAcquire(t, in)
		start := time.Now()
		err := c.Reconfigure(ctx, g.after)
		assert.Equal(t, time.Second, time.Since(start), "the timeout, in whole seconds")
		require.ErrorIs(t, err, lock.ErrLockLost)
		assert.Contains(t, err.Error(), "1 of 1 held locks could not follow")
		require.True(t, gotLost(l.Lost()), "reported lost when Reconfigure returns")
		assert.ErrorIs(t, l.Err(), lock.ErrLockLost)
		synctest.Wait()
		from, _ := g.before.Server(moved[0])
		assert.Zero(t, keyHolders(g.byAddr[from], moved[0]), "given back on its old server")
	})
}

// A lock released while it is being taken on its new servers is released
// cleanly: Release succeeds (it held its old servers, all it counted on),
// Reconfigure does not count it lost, and the late grant on the new
// server goes back.
func TestReleaseWhileFollowing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newVirtualGrown(t, "consistent")
		c := g.client(t, g.before, 1)
		slowNew := g.client(t, g.after, 1) // holds the new server for a while
		moved, _ := g.keys(t, "r", 1, 1)
		k := moved[0]
		ctx := ctxFor(t, wait)
		l := c.Lock(k)
		mustAcquire(t, l)
		blocker := slowNew.Lock(k)
		mustAcquire(t, blocker)
		done := make(chan error, 1)
		go func() { done <- c.Reconfigure(ctx, g.after) }()
		synctest.Wait()
		require.Positive(t, waitersOn(g, k), "Reconfigure waits for the new server")
		require.NoError(t, l.Release(ctx))
		require.NoError(t, <-done)
		require.NoError(t, blocker.Release(ctx))
		synctest.Wait()
		to, _ := g.after.Server(k)
		assert.Zero(t, keyHolders(g.byAddr[to], k), "the late grant went back")
		from, _ := g.before.Server(k)
		assert.Zero(t, keyHolders(g.byAddr[from], k))
	})
}

// A change to a server that does not answer is refused, nothing changed
// and nothing lost: every lock moving there would be. With replicas a
// quorum suffices, and the change goes ahead.
func TestReconfigureToADeadServer(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("r%d", replicas), func(t *testing.T) {
			g := newGrown(t, "rendezvous")
			require.NoError(t, g.f.server(t, 3).Stop())
			c := g.client(t, g.before, replicas)
			moved, _ := g.keys(t, "d", 5, replicas)
			ctx := ctxFor(t, wait)
			locks := holdAll(t, c, moved)
			err := c.Reconfigure(ctx, g.after)
			_, previous := c.Membership()
			if replicas == 1 {
				require.ErrorContains(t, err, "fleet change refused, nothing changed")
				assert.Nil(t, previous)
				for _, l := range locks {
					assertFollows(t, l, g.before, 1)
				}
				return
			}
			require.NoError(t, err)
			assert.NotNil(t, previous)
			for _, l := range locks {
				assertFollows(t, l, g.transition(t), replicas)
				assert.False(t, gotLost(l.Lost()))
			}
		})
	}
}

// Without replicas, a moving key's new server is its only one there: a
// slow answer is waited for, up to the acquire timeout, not given up
// after Config.ReplicaTimeout. The acquire takes exactly the stall.
func TestMovingKeyWaitsForASlowServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newVirtualGrown(t, "rendezvous")
		c := g.f.client(t, lock.Config{Strategy: g.transition(t), ReplicaTimeout: 50 * time.Millisecond})
		moved, _ := g.keys(t, "slow", 1, 1)
		to, _ := g.after.Server(moved[0])
		mustAcquire(t, c.Lock("warm-up-"+moved[0])) // connections up
		g.byAddr[to].Stall(300 * time.Millisecond)
		l := c.Lock(moved[0], lock.AcquireTimeout(3*time.Second))
		start := time.Now()
		mustAcquire(t, l)
		assert.Equal(t, 300*time.Millisecond, time.Since(start))
		assertFollows(t, l, g.transition(t), 1)
	})
}

// Closing a client while it takes its held locks on their new servers (a
// fleet file's step, which Close ends) releases them; it does not report
// them lost. The file is read every second of virtual time: the step
// begins at the first read after the file changed.
func TestCloseDuringAFleetStepReportsNoLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newVirtualGrown(t, "consistent")
		path := filepath.Join(t.TempDir(), "fleet.json")
		writeFleet(t, path, lock.Fleet{Strategy: "consistent", Servers: g.f.addrs[:3]})
		c := g.f.client(t, lock.Config{FleetFile: path})
		var losses atomic.Int64
		lock.SetLossHook(c, func(lock.LossReport) { losses.Add(1) })
		blocker := g.client(t, g.after, 1) // holds the new server a while
		moved, _ := g.keys(t, "cl", 1, 1)
		var onLost atomic.Int64
		l := c.Lock(moved[0], lock.OnLost(func(string, error) { onLost.Add(1) }))
		mustAcquire(t, l)
		mustAcquire(t, blocker.Lock(moved[0]))
		writeFleet(t, path, lock.Fleet{Strategy: "consistent", Servers: g.f.addrs, Previous: g.f.addrs[:3]})
		time.Sleep(lock.DefaultFleetWatchInterval)
		synctest.Wait()
		require.Positive(t, waitersOn(g, moved[0]), "the step waits for the new server")
		require.NoError(t, c.Close())
		assert.Zero(t, losses.Load(), "reported lost")
		assert.Zero(t, onLost.Load())
		synctest.Wait()
		from, _ := g.before.Server(moved[0])
		assert.Zero(t, keyHolders(g.byAddr[from], moved[0]), "released")
	})
}

// Contenders in a transition, with replicas, for keys whose old and new
// replica sets start with the same server (the arbiter of both): none
// keeps the old set's quorum without its arbiter while it waits on the
// new set's, which would hold up the arbiter's holder, and it them. Two
// seconds of virtual time, eight contenders per key each holding it 10 ms
// of it: no acquire times out.
func TestSharedArbiterDoesNotDeadlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 5, fakeserver.Config{MaxLocks: 100_000})
		from, err := shard.NewRendezvous(f.addrs)
		require.NoError(t, err)
		to, err := shard.NewRendezvous(f.addrs[:4])
		require.NoError(t, err)
		tr, err := shard.NewTransition(from, to)
		require.NoError(t, err)
		var keys []string
		for i := 0; len(keys) < 4; i++ {
			k := fmt.Sprintf("shared-%d", i)
			if rt, _ := tr.Routes(k, 3); len(rt) == 2 && rt[0][0] == rt[1][0] {
				keys = append(keys, k)
			}
		}
		stop := time.Now().Add(2 * time.Second)
		var acquired, failed atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			c := f.client(t, lock.Config{Strategy: tr, Replicas: 3})
			for _, k := range keys {
				wg.Go(func() {
					for time.Now().Before(stop) {
						l := c.Lock(k, lock.AcquireTimeout(2*time.Second))
						ok, err := l.Acquire(context.Background())
						if err != nil || !ok {
							failed.Add(1)
							continue
						}
						acquired.Add(1)
						time.Sleep(10 * time.Millisecond)
						assert.NoError(t, l.Release(context.Background()))
					}
				})
			}
		}
		wg.Wait()
		t.Logf("%d acquired, %d timed out", acquired.Load(), failed.Load())
		assert.Positive(t, acquired.Load())
		assert.Zero(t, failed.Load(), "acquires timed out: contenders held each other up")
	})
}

// A moving key's release needs both servers' answers. A stalled one is
// waited for until ctx ends: Release then says so at once, and the
// release still reaches the server when it answers (nothing left held).
// Without a ctx deadline, the close timeout bounds the wait, and Release
// says the stalled server did not answer.
func TestMovingKeyReleaseWithAStalledServer(t *testing.T) {
	for _, stalled := range []string{"old", "new"} {
		t.Run(stalled, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newVirtualGrown(t, "consistent")
				c := g.client(t, g.transition(t), 1)
				moved, _ := g.keys(t, "m"+stalled, 1, 1)
				k := moved[0]
				from, _ := g.before.Server(k)
				to, _ := g.after.Server(k)
				srv := g.byAddr[from]
				if stalled == "new" {
					srv = g.byAddr[to]
				}
				released := func() {
					t.Helper()
					srv.Unstall()
					synctest.Wait()
					assert.Zero(t, keyHolders(g.byAddr[from], k), "released on its old server")
					assert.Zero(t, keyHolders(g.byAddr[to], k), "released on its new server")
				}
				l := c.Lock(k)
				mustAcquire(t, l)
				srv.Stall(time.Hour)
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				start := time.Now()
				err := l.Release(ctx)
				assert.Equal(t, 300*time.Millisecond, time.Since(start))
				require.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Contains(t, err.Error(), "when ctx ended (the rest are still sent)")
				released()

				mustAcquire(t, l)
				srv.Stall(time.Hour)
				start = time.Now()
				err = l.Release(context.Background())
				assert.Equal(t, lock.DefaultCloseTimeout, time.Since(start))
				require.ErrorContains(t, err, "did not answer")
				released()
			})
		})
	}
}
