package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
)

// routing is where a client takes keys: one membership, or a transition
// between two (joint routing, see Client.Reconfigure). A fleet change
// replaces it whole; each held lock remembers the one it follows.
type routing struct {
	strategy shard.Strategy
	joint    *shard.Transition // strategy, during a transition
}

func newRouting(s shard.Strategy) *routing {
	t, _ := s.(*shard.Transition)
	return &routing{strategy: s, joint: t}
}

// owners returns key's one server before and after a transition: the
// same server twice, outside one or for a key that stays.
func (rt *routing) owners(key string) (from, to string, err error) {
	if rt.joint == nil {
		to, err = rt.strategy.Server(key)
		return to, to, err
	}
	return rt.joint.Owners(key)
}

// routes returns key's routes with n replicas: its servers, or, for a key
// whose servers change in a transition, its old servers, then its new.
func (rt *routing) routes(key string, n int) ([][]string, error) {
	if rt.joint != nil {
		return rt.joint.Routes(key, n)
	}
	r, err := shard.Replicas(rt.strategy, key, n)
	if err != nil {
		return nil, err
	}
	return [][]string{r}, nil
}

// ErrInTransition is returned by Reconfigure while a fleet change is
// still under way: Commit or Abort it first.
var ErrInTransition = errors.New("lock: a fleet change is under way: Commit or Abort it first")

// Reconfigure starts moving the client from its fleet to the servers of
// to (a strategy over the new membership; it may also be another kind of
// strategy, to migrate from one to another): the client enters the
// transition between them, and stays there until Commit (or Abort). A
// key whose servers are the same in both is taken as before. A key whose
// servers differ is taken on its old servers first, then on its new
// ones, and released on both. Every lock the client holds on such a key
// is taken on its new servers before Reconfigure returns; one that cannot
// be, within ctx and its acquire timeout, is lost (reported as any loss)
// and counted in the error. Its Token may change at Commit, when the
// server that issued it is left behind.
//
// Before anything changes, every server the change adds must answer
// (within 5 s): without replicas, Reconfigure is refused otherwise, as
// every lock moving to a silent server would be lost; with replicas, a
// quorum suffices and it goes ahead. A change to the very fleet the
// client is on does nothing.
//
// Operators roll a change out in two steps, and every client must finish
// a step before any client starts the next:
//
//  1. every client calls Reconfigure(to) (or reads a fleet file that
//     names the new servers and the previous ones, see Config.FleetFile);
//  2. once all have returned, every client calls Commit (the fleet
//     file drops the previous servers).
//
// Clients before step 1 and in the transition may run together, and so
// may clients in the transition and after step 2: each pair takes every
// moving key on one common set of servers. Clients before step 1 and
// after step 2 must never run together: they could both hold a key, one
// on its old servers and one on its new. A client started during the
// rollout must start in the transition (Config.Strategy a
// *shard.Transition, or the fleet file). Removing a server is the same
// change. To give a change up before step 2, every client calls Abort.
func (c *Client) Reconfigure(ctx context.Context, to shard.Strategy) error {
	c.moveMu.Lock()
	defer c.moveMu.Unlock()
	cur := c.route.Load()
	switch {
	case c.isClosed():
		return ErrClosed
	case cur.joint != nil:
		return ErrInTransition
	case to != nil && sameStrategy(cur.strategy, to):
		return nil
	}
	t, err := shard.NewTransition(cur.strategy, to)
	if err != nil {
		return err
	}
	return c.step(ctx, t, "entered the transition")
}

// Commit ends the transition Reconfigure started: the client routes by
// the new membership alone, and gives back what its held locks hold on
// the old servers of keys that moved. Call it once every client of the
// fleet has returned from Reconfigure. Without a transition it does
// nothing.
func (c *Client) Commit(ctx context.Context) error {
	return c.leave(ctx, (*shard.Transition).To, "committed")
}

// Abort gives the transition Reconfigure started up: the client routes by
// the old membership again, and gives back what its held locks hold on
// the new servers of keys that moved. Every client in the transition must
// abort before any client reconfigures again. Without a transition it
// does nothing.
func (c *Client) Abort(ctx context.Context) error {
	return c.leave(ctx, (*shard.Transition).From, "aborted")
}

// leave ends the client's transition for the membership side picks.
func (c *Client) leave(ctx context.Context, side func(*shard.Transition) shard.Strategy, step string) error {
	c.moveMu.Lock()
	defer c.moveMu.Unlock()
	cur := c.route.Load()
	switch {
	case c.isClosed():
		return ErrClosed
	case cur.joint == nil:
		return nil
	}
	return c.step(ctx, side(cur.joint), step)
}

// Membership returns the client's fleet: the servers keys live on, and
// during a transition (see Reconfigure) the previous ones, else nil.
func (c *Client) Membership() (servers, previous []string) {
	rt := c.route.Load()
	if rt.joint != nil {
		return rt.joint.To().Servers(), rt.joint.From().Servers()
	}
	return rt.strategy.Servers(), nil
}

// conformWorkers bounds how many held locks a fleet change brings to the
// new routing at once.
const conformWorkers = 64

// reroute makes s the client's routing and brings every held lock to
// it. A lock taken under the old routing after the switch brings itself
// (see settle), so none is missed. c.moveMu is held.
func (c *Client) reroute(ctx context.Context, s shard.Strategy) error {
	if _, err := checkReplicas(c.replicas, s); err != nil {
		return err
	}
	if err := c.preflight(ctx, s); err != nil {
		return err
	}
	rt := newRouting(s)
	c.route.Store(rt)
	c.mu.RLock()
	locks := make([]*Lock, 0, len(c.active))
	for l := range c.active {
		locks = append(locks, l)
	}
	c.mu.RUnlock()
	var (
		mu   sync.Mutex
		errs []error
		lost int
		next = make(chan *Lock)
		wg   sync.WaitGroup
	)
	for range min(conformWorkers, len(locks)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range next {
				// A held key's new servers are free but for a holder
				// letting go: a lock set never to wait still waits a
				// little.
				dctx, cancel := context.WithTimeout(ctx, max(l.opt.acquireTimeout, time.Second))
				deadline, _ := dctx.Deadline()
				_, err := l.conform(dctx, deadline, false)
				cancel()
				if err != nil {
					mu.Lock()
					lost++
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, l := range locks {
		next <- l
	}
	close(next)
	wg.Wait()
	if c.isClosed() {
		// Close cut the change short and gave back what it had not
		// moved: the client is not in the new routing with its locks.
		return ErrClosed
	}
	if lost > 0 {
		return fmt.Errorf("lock: %d of %d held locks could not follow the fleet change and were lost: %w", lost, len(locks), errors.Join(errs[:min(len(errs), 5)]...))
	}
	return nil
}

// errCannotFollow is why a held lock is lost when its new servers cannot
// be taken in a fleet change.
var errCannotFollow = errors.New("could not be taken on its new servers")

// preflightTimeout bounds the wait for a new server's answer before a
// fleet change.
const preflightTimeout = 5 * time.Second

// preflight makes sure the servers s adds to the client's answer before
// it moves there: every held lock on a key that moves to a server that
// cannot be reached would be lost. With Replicas, a minority of a key's
// servers may be down (a quorum suffices), so a silent one is only
// logged.
func (c *Client) preflight(ctx context.Context, s shard.Strategy) error {
	known := c.route.Load().strategy.Servers()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	pctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	for _, addr := range s.Servers() {
		p, err := c.poolAt(addr)
		if err != nil {
			return err
		}
		if slices.Contains(known, addr) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Ping(pctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", addr, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	switch {
	case len(errs) == 0:
		return nil
	case c.replicas > 1:
		c.log.Warn("lock: fleet change: a new server does not answer; its replicas are taken when it does", "err", errors.Join(errs...))
		return nil
	}
	return fmt.Errorf("lock: fleet change refused, nothing changed: a new server does not answer, and every lock moving to it would be lost: %w", errors.Join(errs...))
}

// settle is Acquire's (and Wait's, Enqueue's) last step: a lock taken
// under rt, if the client's routing changed meanwhile, is brought to the
// new one before it is handed out.
func (l *Lock) settle(ctx context.Context, rt *routing, deadline time.Time, ok bool, err error) (bool, error) {
	if !ok || err != nil || l.c.route.Load() == rt {
		return ok, err
	}
	return l.conform(ctx, deadline, true)
}

// conform brings a held lock to the client's routing: it takes the key on
// the servers of the routing's groups that the lock does not hold a
// quorum of, in order, waiting until deadline, then gives back what it
// holds on servers the routing no longer has. The lock stays held
// throughout. If the new servers cannot be taken, the lock is lost (or,
// quiet, for a lock not yet handed out, given back unreported): false,
// and why. A lock that is not held, or already follows the routing, is
// left alone.
func (l *Lock) conform(ctx context.Context, deadline time.Time, quiet bool) (bool, error) {
	l.moving.Lock()
	defer l.moving.Unlock()
	for {
		rt := l.c.route.Load()
		l.mu.Lock()
		held, at := l.state == stateHeld, l.rt
		l.mu.Unlock()
		if !held {
			return false, nil
		}
		if at == rt {
			return true, nil
		}
		if ok, err := l.conformTo(ctx, rt, deadline, quiet); !ok || err != nil {
			return ok, err
		}
	}
}

// conformTo is one step of conform, to rt: the held holder's grants
// move to a new holder whose groups are the routing's, then the old ones
// it drops (they keep the lock valid until the new ones are taken); the
// new groups are taken; the old servers are given back.
func (l *Lock) conformTo(ctx context.Context, rt *routing, deadline time.Time, quiet bool) (bool, error) {
	routes, err := rt.routes(l.key, l.c.replicas)
	if err != nil {
		return false, err
	}
	l.mu.Lock()
	h0 := l.h
	if l.state != stateHeld {
		// Released or lost since conform looked.
		l.mu.Unlock()
		return false, nil
	}
	old := h0.routes()
	if sameRoutes(old, routes) {
		// Nothing moves for this key (nor its order): it follows rt as
		// it stands.
		l.rt = rt
		l.mu.Unlock()
		return true, nil
	}
	l.mu.Unlock()
	all := slices.Clone(routes)
	for _, r := range old {
		if !slices.ContainsFunc(routes, func(n []string) bool { return sameServers(n, r) }) {
			all = append(all, r)
		}
	}
	h, err := l.newHolder(rt, all)
	if err != nil {
		return false, err
	}
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !l.moveTo(h0, h, cancel) {
		return false, nil // released (or lost) meanwhile
	}
	ok, err := h.takeGroups(tctx, max(time.Until(deadline), time.Nanosecond), deadline, nil)
	return l.conformed(ctx, h, rt, routes, ok, err, quiet)
}

// routes lists the holder's groups as routes, servers by address.
func (h *holder) routes() [][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([][]string, len(h.groups))
	for k, g := range h.groups {
		out[k] = make([]string, len(g.idx))
		for j, i := range g.idx {
			out[k][j] = h.addr(i)
		}
	}
	return out
}

// moveTo moves the grants of h0, the held lock's holder, to h, which
// becomes its holder, taking its new groups (endTake ends that take);
// h0 ends, and a late answer to it is given back. False if the lock is
// no longer held by h0.
func (l *Lock) moveTo(h0, h *holder, endTake func()) bool {
	type moved struct {
		i int
		g *pool.Grant
	}
	var ms []moved
	l.mu.Lock()
	if l.state != stateHeld || l.h != h0 {
		l.mu.Unlock()
		return false
	}
	h0.mu.Lock()
	h.mu.Lock()
	for j := range h0.slots {
		s0 := &h0.slots[j]
		if s0.grant == nil {
			continue
		}
		i := h.index(s0.addr)
		s := &h.slots[i]
		s.grant, s.entry, s.last = s0.grant, s0.entry, s0.grant
		ms = append(ms, moved{i, s0.grant})
		s0.grant, s0.entry = nil, nil
	}
	if h0.x != nil {
		h.extraLocked().shown = h0.x.shown
	}
	h0.endLocked()
	h0.mu.Unlock()
	for k, g := range h.groups {
		if countIn(g, h.hasLocked) >= g.quorum {
			h.taken = h.taken.with(k)
		}
	}
	h.held, h.taking = true, true
	h.extraLocked().endTake = endTake
	h.mu.Unlock()
	l.h = h
	l.mu.Unlock()
	for _, m := range ms {
		// Replaces the old callback; runs now if the grant was lost
		// since.
		m.g.OnLost(func(err error) { h.replicaLost(m.i, m.g, err) })
	}
	return true
}

// conformed ends conformTo once h's take of rt's groups (routes) ended
// with ok and err: the lock follows rt, and what only the old groups held
// is given back; or it could not follow, and is lost (quiet: given back
// unreported, for a lock not yet handed out).
func (l *Lock) conformed(ctx context.Context, h *holder, rt *routing, routes [][]string, ok bool, err error, quiet bool) (bool, error) {
	closing := l.c.isClosed() // before l.mu: Client.mu comes first
	l.mu.Lock()
	if l.h != h || l.state != stateHeld {
		// Released meanwhile (which ended the take), or lost, which is
		// reported as such.
		l.mu.Unlock()
		return false, nil
	}
	if !ok || err != nil {
		return l.cannotFollow(ctx, h, routes, err, quiet, closing)
	}
	h.mu.Lock()
	h.groups, h.cur = h.groups[:len(routes):len(routes)], 0
	h.taken &= allGroups(len(routes))
	gs, es := h.takeOutLocked(func(i int) bool { return !h.keptLocked(i) })
	h.x.endTake, h.x.backoff = nil, retakeFirst
	h.mu.Unlock()
	l.rt = rt
	l.mu.Unlock()
	for _, e := range es {
		l.c.renewer.remove(e)
	}
	l.giveBack(ctx, gs)
	// A group taken with a quorum it already held (servers it shares
	// with an old group) may miss a replica: this step tries it now,
	// rather than leave it to a background re-take at once. A fleet
	// change conforms thousands of locks a few at a time
	// (conformWorkers); their re-takes all at once would be thousands of
	// goroutines and requests together, and the renewals caught behind
	// them missed their deadlines. Still taking meanwhile: no background
	// re-take starts before this try ends. Not one batch for every lock
	// at the step's end either: each lock would stay a replica short for
	// the whole step, and one server failing then would leave many below
	// a quorum.
	h.retakeNow(l.c.replicaTimeout)
	h.doneTaking()
	return true, nil
}

// cannotFollow ends a conform whose take of the new groups failed (err,
// or busy until the deadline): the lock is lost, or, quiet or closing,
// given back unreported. l.mu is held, and released.
func (l *Lock) cannotFollow(ctx context.Context, h *holder, routes [][]string, err error, quiet, closing bool) (bool, error) {
	h.mu.Lock()
	k := 0
	for k < len(h.groups) && h.taken.has(k) {
		k++
	}
	why := err
	if why == nil {
		why = fmt.Errorf("busy until the deadline")
	}
	route := routes[min(k, len(routes)-1)]
	k = min(k, len(h.groups)-1)
	lostErr := fmt.Errorf("%w: %s %w %v: %w", ErrLockLost, l.what(), errCannotFollow, route, why)
	if !quiet && !closing {
		h.loseLocked(lostErr, strings.Join(route, ","), k, countIn(h.groups[k], h.hasLocked)) // unlocks both
		return false, lostErr
	}
	h.mu.Unlock()
	l.mu.Unlock()
	if closing && !quiet {
		// The client is closing (which ended the take): given back, and
		// its holder told so, as Close does.
		if rerr := l.revoke().release(context.WithoutCancel(ctx)); rerr != nil {
			l.c.log.Debug("lock: giving back a lock that could not follow the fleet", "key", l.key, "err", rerr)
		}
		return false, nil
	}
	// Not handed out yet: given back, not reported lost.
	if rerr := l.release(context.WithoutCancel(ctx)); rerr != nil {
		l.c.log.Debug("lock: giving back a lock that could not follow the fleet", "key", l.key, "err", rerr)
	}
	l.c.log.Debug("lock: a lock taken as the fleet changed could not follow it", "key", l.key, "err", lostErr)
	if err == nil || closing {
		return false, nil
	}
	// Not ErrLockLost: the caller never held it.
	return false, fmt.Errorf("lock: %s was taken as the fleet changed, but not on its new servers %v: %w", l.what(), route, err)
}

// sameRoutes reports whether a and b are the same routes: in the same
// order, each the same set of servers.
func sameRoutes(a, b [][]string) bool {
	return slices.EqualFunc(a, b, sameServers)
}
