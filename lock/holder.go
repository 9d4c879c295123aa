package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/dflock-go/dflock/pool"
)

// holder is what a Lock holds, or is taking, for one acquisition: a slot
// per server of the key, each holding that server's grant or nothing.
// Every acquisition has one, whatever the key: a key on one server is a
// holder of one group of one slot, with a quorum of one; a replicated
// key (Config.Replicas) has one group of its replicas; a key that moves
// in a fleet transition has two groups (its servers in the old
// membership and in the new, sharing the servers they have in common).
// A group is taken when the holder holds a quorum of it and its arbiter
// (see takeView.arbiter); the groups are taken one after the other, in
// order, and the key stays held while every group keeps a quorum.
//
// The decisions are takeView's pure functions; the holder keeps the
// state they judge, under its own mutex, taken once per step.
type holder struct {
	l  *Lock
	rt *routing // the routing the groups come from
	// deadline bounds the acquisition, and the wait for each answer (see
	// answerWait); tryOnly says it has none: a try-lock alone. Set by the
	// taker before its first request.
	deadline time.Time
	tryOnly  bool

	// mu guards the fields below; see the lock order in lock.go.
	mu     sync.Mutex
	slots  []slot
	groups []replicaGroup
	taken  groupSet
	cur    int // the group being taken
	arb    int // queued by Enqueue: the arbiter it chose
	// yieldTo: waiting on this arbiter, other grants go back; -1 if not.
	yieldTo int
	// single: one server per group (Replicas 1): each must answer
	// however slow; there is no other to go on without it. Set at
	// creation.
	single bool
	held   bool // handed to the caller as held
	over   bool // released, lost or given up: late grants go back
	// taking: a held holder takes a new group (see Lock.conform). No
	// background re-take meanwhile: one could take the very replica the
	// take waits for, and the wait would queue behind its own holder.
	taking bool
	// x is what only replicas, moving keys and waits need, made on first
	// need: a lock on one server, taken at once, never makes it.
	x *holderExtra

	// one is the slot of a key on one server, and oneOuts its try-lock's
	// outcome, so that the common case allocates nothing more than the
	// holder (which comes with the handle, see Lock.first).
	one     [1]slot
	oneOuts [1]tryOutcome // only the taker asks one slot
	outBufs
}

// holderExtra is the holder's state for re-takes and waits; guarded by
// holder.mu.
type holderExtra struct {
	retake  *retakeEntry  // the next background attempt at the missing replicas
	backoff time.Duration // before it
	// backoffCap bounds backoff: short while the missing replicas answer
	// busy, long while one does not answer.
	backoffCap time.Duration
	ctx        context.Context // ends when the holder is over: bounds background requests
	stop       context.CancelFunc
	endTake    func() // ends a take of a held holder's new group (see Lock.conform)
	// arbTaken, while a wait on the arbiter yieldTo is out, is closed
	// when the holder gets that arbiter's grant some other way (an
	// earlier try-lock answered late): the wait would otherwise queue
	// behind the holder's own grant.
	arbTaken chan struct{}
	shown    *pool.Grant // the grant whose token Token gave last
}

// extraLocked returns the holder's extra state, made on first need;
// h.mu is held.
func (h *holder) extraLocked() *holderExtra {
	if h.x == nil {
		h.x = &holderExtra{backoffCap: retakeMaxBusy}
	}
	return h.x
}

// slot is the holder's place for one server of the key.
type slot struct {
	addr    string
	pool    *pool.Pool
	grant   *pool.Grant // held, nil where not
	entry   *renewal    // the held grant's renewer entry
	last    *pool.Grant // the latest grant, lost ones too, for loss reports
	pending bool        // a request that may take the replica is out
}

// onlyFirst is the group of a key on one server, its one slot, and
// oneServer its groups. Groups never change: every such holder shares
// them.
var (
	onlyFirst = []int{0}
	oneServer = []replicaGroup{{idx: onlyFirst, quorum: 1}}
	// movingServer is the groups of a key on one server that moves: the
	// old server, then the new.
	movingServer = []replicaGroup{{idx: onlyFirst, quorum: 1}, {idx: []int{1}, quorum: 1}}
)

// Bounds of the pause between background attempts at a missing replica.
// A replica that answered busy is held by a contender that lacks the
// arbiter and lets go within a round trip: it is asked again soon. One
// that did not answer (a server down) backs off to retakeMax.
const (
	retakeFirst   = 10 * time.Millisecond
	retakeMaxBusy = 200 * time.Millisecond
	retakeMax     = time.Second
)

// errSlowServer is why a replica whose server lately failed to answer
// within Config.ReplicaTimeout is left out, while one request at a time
// probes it.
var errSlowServer = errors.New("no answer within the replica timeout lately")

// errQuorumLost is why the replicas still held are given back once a
// quorum is out of reach.
var errQuorumLost = errors.New("the lock lost its quorum")

// holderOn makes the holder of an acquisition on one server, addr.
func (l *Lock) holderOn(rt *routing, addr string) (*holder, error) {
	p, err := l.c.poolAt(addr)
	if err != nil {
		return nil, err
	}
	h := l.freshHolder(rt)
	h.one[0] = slot{addr: addr, pool: p}
	h.slots, h.groups = h.one[:], oneServer
	return h, nil
}

// holderMoving makes the holder of an acquisition of a key on one server
// that moves from one to another in a fleet transition.
func (l *Lock) holderMoving(rt *routing, from, to string) (*holder, error) {
	pf, err := l.c.poolAt(from)
	if err != nil {
		return nil, err
	}
	pt, err := l.c.poolAt(to)
	if err != nil {
		return nil, err
	}
	h := l.freshHolder(rt)
	two := &[2]slot{{addr: from, pool: pf}, {addr: to, pool: pt}}
	h.slots, h.groups = two[:], movingServer
	return h, nil
}

// freshHolder returns a new holder for an acquisition of l under rt, with
// no servers yet.
func (l *Lock) freshHolder(rt *routing) *holder {
	var h *holder
	if l.firstTaken {
		h = new(holder)
	} else {
		// The handle's first acquisition, most often its only one: its
		// holder comes with the handle.
		h, l.firstTaken = &l.first, true
	}
	h.l, h.rt, h.single, h.yieldTo = l, rt, l.c.replicas == 1, -1
	return h
}

// newHolder makes the holder of an acquisition over routes, each the
// key's servers in one membership (see routing.routes), taken in that
// order.
func (l *Lock) newHolder(rt *routing, routes [][]string) (*holder, error) {
	if len(routes) == 1 && len(routes[0]) == 1 {
		return l.holderOn(rt, routes[0][0])
	}
	h := l.freshHolder(rt)
	n, total := 0, 0
	for _, r := range routes {
		total += len(r)
	}
	var idx []int
	if len(routes) <= len(space{}.groups) && total <= len(space{}.idx) {
		// The slots, groups and indexes of a small holder (a moving key,
		// a few replicas) in one allocation.
		sp := &space{}
		h.slots, h.groups, idx = sp.slots[:0], sp.groups[:len(routes)], sp.idx[:total]
	} else {
		h.groups, idx = make([]replicaGroup, len(routes)), make([]int, total)
	}
	for k, r := range routes {
		g := replicaGroup{idx: idx[:len(r):len(r)], quorum: Quorum(len(r), max(l.limit, 1))}
		idx = idx[len(r):]
		for j, a := range r {
			i := slices.IndexFunc(h.slots, func(s slot) bool { return s.addr == a })
			if i < 0 {
				p, err := l.c.poolAt(a)
				if err != nil {
					return nil, err
				}
				i, n = n, n+1
				h.slots = append(h.slots, slot{addr: a, pool: p})
			}
			g.idx[j] = i
		}
		h.groups[k] = g
	}
	return h, nil
}

// space holds the slots, groups and indexes of a holder of a few
// servers.
type space struct {
	slots  [6]slot
	groups [2]replicaGroup
	idx    [10]int
}

// holder (the holding of a Lock) is placed under rt by holderFor.
func (l *Lock) holderFor(rt *routing) (*holder, error) {
	if l.c.replicas == 1 {
		from, to, err := rt.owners(l.key)
		if err != nil {
			return nil, err
		}
		if from == to {
			return l.holderOn(rt, to)
		}
		return l.holderMoving(rt, from, to)
	}
	routes, err := rt.routes(l.key, l.c.replicas)
	if err != nil {
		return nil, err
	}
	return l.newHolder(rt, routes)
}

// addr is the address of server i. A slot's address never changes: it
// is read without h.mu.
func (h *holder) addr(i int) string { return h.slots[i].addr }

// index is the index of the server at addr, or -1; read without h.mu,
// as addr.
func (h *holder) index(addr string) int {
	for i := range h.slots {
		if h.slots[i].addr == addr {
			return i
		}
	}
	return -1
}

// heldLocked reports, by server, whether a grant is held; buf is reused
// when it is long enough. h.mu is held.
func (h *holder) heldLocked(buf []bool) []bool {
	held := buf[:0]
	if cap(buf) < len(h.slots) {
		held = make([]bool, 0, len(h.slots))
	}
	for _, s := range h.slots {
		held = append(held, s.grant != nil)
	}
	return held
}

// viewBuf holds a takeView's slices for up to viewBufLen servers, so
// that a view of a common key lives on the stack.
const viewBufLen = 8

type viewBuf struct{ held, slow, refuses [viewBufLen]bool }

// viewLocked is the snapshot of the group being taken that the
// decisions judge, with outs, this round's answers; h.mu is held.
func (h *holder) viewLocked(outs []tryOutcome, buf *viewBuf) takeView {
	g := h.groups[h.cur]
	v := takeView{group: g.idx, quorum: g.quorum, held: h.heldLocked(buf.held[:]), outs: outs}
	v.slow, v.refuses = buf.slow[:0], buf.refuses[:0]
	if len(h.slots) > viewBufLen {
		v.slow, v.refuses = make([]bool, 0, len(h.slots)), make([]bool, 0, len(h.slots))
	}
	slow := h.l.c.slow
	for _, s := range h.slots {
		if h.single {
			// Asked however slow lately, and never judged by it.
			v.slow, v.refuses = append(v.slow, false), append(v.refuses, slow.refusesWaits(s.addr))
			continue
		}
		v.slow, v.refuses = append(v.slow, slow.recent(s.addr)), append(v.refuses, slow.refusesWaits(s.addr))
	}
	return v
}

// verdict is a decision of the take (see takeView) on the group being
// taken.
type verdict int

const (
	takenVerdict   verdict = iota // takeView.quorumWith
	quorumVerdict                 // takeView.hasQuorum
	decidedVerdict                // takeView.decided
)

// judge decides v on the snapshot of the group being taken, with outs.
// The view stays on the stack: a decision costs no allocation.
func (h *holder) judge(outs []tryOutcome, what verdict) bool {
	var buf viewBuf
	h.mu.Lock()
	defer h.mu.Unlock()
	v := h.viewLocked(outs, &buf)
	switch what {
	case takenVerdict:
		return v.quorumWith()
	case quorumVerdict:
		return v.hasQuorum()
	}
	return v.decided()
}

// holds reports whether the holder holds replica i.
func (h *holder) holds(i int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.slots[i].grant != nil
}

// current returns the index of the group being taken, and whether a
// later one follows.
func (h *holder) current() (k int, more bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur, h.cur+1 < len(h.groups)
}

// setCurrent makes k the group being taken.
func (h *holder) setCurrent(k int) {
	h.mu.Lock()
	h.cur = k
	h.mu.Unlock()
}

// missing lists the replicas of the group being taken that the holder
// does not hold.
func (h *holder) missing() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.slots) == 1 {
		if h.slots[0].grant == nil {
			return onlyFirst
		}
		return nil
	}
	var idx []int
	for _, i := range h.groups[h.cur].idx {
		if h.slots[i].grant == nil {
			idx = append(idx, i)
		}
	}
	return idx
}

// group lists the replicas of the group being taken.
func (h *holder) group() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.groups[h.cur].idx
}

// markTaken marks group k taken if the holder holds its quorum, and
// says whether it does: after a take of it, which followed the arbiter
// rule.
func (h *holder) markTaken(k int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if countIn(h.groups[k], h.hasLocked) >= h.groups[k].quorum {
		h.taken = h.taken.with(k)
	}
	return h.taken.has(k)
}

// holdsAlready marks group k taken, without a take of it, if the holder
// holds enough of it already (see holdsEnough), and says whether it
// does.
func (h *holder) holdsAlready(k int) bool {
	var buf [viewBufLen]bool
	h.mu.Lock()
	defer h.mu.Unlock()
	if holdsEnough(h.groups, k, h.heldLocked(buf[:])) {
		h.taken = h.taken.with(k)
	}
	return h.taken.has(k)
}

// hasLocked reports whether the holder holds replica i; h.mu is held.
func (h *holder) hasLocked(i int) bool { return h.slots[i].grant != nil }

// keptLocked reports whether replica i belongs to a taken group; h.mu is
// held.
func (h *holder) keptLocked(i int) bool { return kept(h.groups, h.taken, i) }

// takenLocked returns the groups the lock counts on: those taken (a held
// holder still taking a new group does not count on it yet); h.mu is
// held.
func (h *holder) takenLocked() []replicaGroup {
	if h.taken.all(len(h.groups)) {
		return h.groups // the common case: no copy
	}
	var out []replicaGroup
	for k, g := range h.groups {
		if h.taken.has(k) {
			out = append(out, g)
		}
	}
	return out
}

// offer gives the holder replica i's grant g. A holder that is over, or
// already holds that replica, or waits on another arbiter, gives it
// straight back.
func (h *holder) offer(i int, g *pool.Grant) bool {
	l := h.l
	h.mu.Lock()
	s := &h.slots[i]
	if h.over || s.grant != nil || (h.yieldTo >= 0 && i != h.yieldTo && !h.keptLocked(i)) {
		h.mu.Unlock()
		g.Drop(errUnwanted)
		return false
	}
	e := &renewal{l: l, g: g, h: h, i: i, idx: -1}
	s.grant, s.entry, s.last = g, e, g
	if x := h.x; i == h.yieldTo && x != nil && x.arbTaken != nil {
		close(x.arbTaken)
		x.arbTaken = nil
	}
	h.mu.Unlock()
	l.c.renewer.add(e)
	// Last, with no lock held: if the grant is already lost, this reports
	// it now.
	g.Listen(e)
	return true
}

// replicaLost is the loss callback of replica i's grant g. While every
// taken group keeps a quorum the replica is taken again in the
// background; below it, a held lock is lost. A key on one server has no
// replica to spare: its loss is the lock's.
func (h *holder) replicaLost(i int, g *pool.Grant, err error) {
	l := h.l
	var buf [viewBufLen]bool
	l.mu.Lock()
	h.mu.Lock()
	s := &h.slots[i]
	if s.grant != g {
		h.mu.Unlock()
		l.mu.Unlock()
		return
	}
	e := s.entry
	s.grant, s.entry = nil, nil
	k := short(h.groups, h.taken, h.heldLocked(buf[:]))
	switch {
	case h.over || !h.held || l.h != h || l.state != stateHeld:
		// Not handed out (the taker counts what is left), or done.
		h.mu.Unlock()
		l.mu.Unlock()
		l.c.renewer.remove(e)
	case k < 0:
		h.extraLocked().backoff = 0
		h.scheduleLocked()
		h.mu.Unlock()
		l.mu.Unlock()
		l.c.renewer.remove(e)
		// Debug: a server going down costs every lock it held a replica;
		// the pool already logs the connections that broke.
		l.c.log.Debug("lock: lost a replica; still held on a quorum, taking it again", "key", l.key, "server", s.addr, "err", err)
	default:
		l.c.renewer.remove(e)
		grp := h.groups[k]
		left := countIn(grp, h.hasLocked)
		if len(h.slots) == 1 {
			err = fmt.Errorf("%w: %q on %s: %w", ErrLockLost, l.key, s.addr, err)
		} else {
			err = fmt.Errorf("%w: %s: %s lost, %d of %d replicas left, quorum %d: %w", ErrLockLost, l.what(), s.addr, left, len(grp.idx), grp.quorum, err)
		}
		h.loseLocked(err, s.addr, k, left+1)
	}
}

// loseLocked reports the held lock lost, because group k fell below its
// quorum (heldBefore of it were held just before), and gives back what
// is still held, in case a server still counts it. l.mu and h.mu are
// held, and released.
func (h *holder) loseLocked(err error, server string, k, heldBefore int) {
	rest, entries := h.endLocked()
	g := h.groups[k]
	taken := make([]*pool.Grant, len(g.idx))
	for j, i := range g.idx {
		taken[j] = h.slots[i].last
	}
	h.mu.Unlock()
	h.l.lose(err, server, lossReport{taken, g.quorum, heldBefore}) // unlocks l.mu
	h.drop(rest, entries, errQuorumLost)
}

// endLocked marks the holder over and takes its grants and entries out;
// h.mu is held.
func (h *holder) endLocked() ([]*pool.Grant, []*renewal) {
	ending := !h.over
	h.over = true
	if x := h.x; x != nil {
		if x.stop != nil {
			x.stop()
		}
		if x.retake != nil {
			h.l.c.retakes.cancel(x.retake)
		}
		if x.endTake != nil {
			x.endTake()
		}
	}
	all := func(int) bool { return true }
	if ending && h.countLocked(all) <= len(h.outBufs.grants) {
		// Once per holder: its buffers are free for it.
		return h.takeOutInto(all, h.outBufs.grants[:0], h.outBufs.entries[:0])
	}
	return h.takeOutLocked(all)
}

// outBufs are where a holder's grants go when it ends (and, for a holder
// of one slot, whenever they are taken out, which happens once): no
// allocation.
type outBufs struct {
	grants  [2]*pool.Grant
	entries [2]*renewal
}

// takeOutLocked takes the held grants of the replicas out (says which)
// out of the holder, with their renewer entries; h.mu is held.
func (h *holder) takeOutLocked(out func(i int) bool) ([]*pool.Grant, []*renewal) {
	if len(h.slots) == 1 {
		return h.takeOutInto(out, h.outBufs.grants[:0], h.outBufs.entries[:0])
	}
	var gs []*pool.Grant
	var es []*renewal
	if n := h.countLocked(out); n > 0 {
		gs, es = make([]*pool.Grant, 0, n), make([]*renewal, 0, n)
	}
	return h.takeOutInto(out, gs, es)
}

// takeOutInto is takeOutLocked, appending to gs and es.
func (h *holder) takeOutInto(out func(i int) bool, gs []*pool.Grant, es []*renewal) ([]*pool.Grant, []*renewal) {
	for i := range h.slots {
		s := &h.slots[i]
		if s.grant != nil && out(i) {
			gs, es = append(gs, s.grant), append(es, s.entry)
			s.grant, s.entry = nil, nil
		}
	}
	return gs, es
}

// countLocked is how many grants the replicas out says hold; h.mu is
// held.
func (h *holder) countLocked(out func(i int) bool) int {
	n := 0
	for i, s := range h.slots {
		if s.grant != nil && out(i) {
			n++
		}
	}
	return n
}

// drop stops renewing grants taken out of the holder and gives them
// back.
func (h *holder) drop(gs []*pool.Grant, es []*renewal, why error) {
	for _, e := range es {
		h.l.c.renewer.remove(e)
	}
	for _, g := range gs {
		g.Drop(why)
	}
}

// giveUp ends a holder that did not become a held lock, and gives back
// what it took. A held holder (taking a new group, see Lock.conform)
// gives back only what it took of groups it has not taken, and lives
// on.
func (h *holder) giveUp() {
	var gs []*pool.Grant
	var es []*renewal
	h.mu.Lock()
	if h.held {
		gs, es = h.takeOutLocked(func(i int) bool { return !h.keptLocked(i) })
		h.yieldTo = -1
	} else {
		gs, es = h.endLocked()
	}
	h.mu.Unlock()
	h.drop(gs, es, errUnwanted)
}

// yield makes the holder give back every replica but arb (and those of
// the groups it has taken), now and as their grants come in, while it
// waits on the arbiter: what it holds elsewhere would only hold up the
// arbiter's holder. -1 ends that.
func (h *holder) yield(arb int) {
	var gs []*pool.Grant
	var es []*renewal
	h.mu.Lock()
	if h.yieldTo = arb; arb >= 0 {
		gs, es = h.takeOutLocked(func(i int) bool { return i != arb && !h.keptLocked(i) })
	}
	h.mu.Unlock()
	h.drop(gs, es, errUnwanted)
}

// scheduleLocked plans a background attempt at the missing replicas
// that no request is out for; h.mu is held.
func (h *holder) scheduleLocked() {
	if h.over || h.taking || (h.x != nil && h.x.retake != nil) || len(h.toRetakeLocked()) == 0 {
		return
	}
	h.retakeCtxLocked()
	x := h.x
	d := x.backoff
	x.backoff = min(max(2*x.backoff, retakeFirst), x.backoffCap)
	// Jitter keeps the holders of a semaphore's slots out of step.
	x.retake = h.l.c.retakes.schedule(h, d/2+rand.N(d/2+1))
}

// retakeMissing tries, once, to take each missing replica: a pipelined
// try-lock, which never jumps a queue. A held lock whose replica came
// back empty (a restarted server) gets it back, so that the next single
// fault leaves it a quorum.
func (h *holder) retakeMissing() { h.retakeNow(retakeMax) }

// retakeCtxLocked returns the context of the holder's re-takes, which
// its end, or the client's Close, cancels; h.mu is held.
func (h *holder) retakeCtxLocked() context.Context {
	x := h.extraLocked()
	if x.ctx == nil {
		// Made on first need: most locks are released with every replica
		// held, and never re-take one.
		x.ctx, x.stop = context.WithCancel(h.l.c.tasks.ctx)
	}
	return x.ctx
}

// retakeNow is retakeMissing run by the caller, waiting up to wait for
// the answers, then scheduling the next re-take if a replica is still
// missing.
func (h *holder) retakeNow(wait time.Duration) {
	h.mu.Lock()
	h.extraLocked().retake = nil
	idx := h.toRetakeLocked()
	if len(idx) == 0 {
		h.mu.Unlock()
		return
	}
	ctx := h.retakeCtxLocked()
	h.mu.Unlock()
	outs := h.tryAll(ctx, idx, wait, false)
	h.mu.Lock()
	h.retakenLocked(idx, outs)
	h.mu.Unlock()
}

// doneTaking ends the take of a held holder's new groups (see
// Lock.conform): background re-takes may start again, and one does if a
// replica is missing.
func (h *holder) doneTaking() {
	h.mu.Lock()
	h.taking = false
	h.scheduleLocked()
	h.mu.Unlock()
}

// toRetakeLocked lists the replicas a re-take tries: those of a taken
// group the holder holds no grant of and has no try-lock out to; none
// once the holder is over. h.mu is held.
func (h *holder) toRetakeLocked() []int {
	var idx []int
	for i, s := range h.slots {
		if s.grant == nil && !s.pending && !h.over && h.keptLocked(i) {
			idx = append(idx, i)
		}
	}
	return idx
}

// retakenLocked takes in the outcomes of a re-take of the replicas idx:
// the backoff to the next one, which it schedules if a replica is still
// missing. h.mu is held.
func (h *holder) retakenLocked(idx []int, outs []tryOutcome) {
	got, down := false, false
	for _, i := range idx {
		got = got || outs[i].took
		down = down || !outs[i].answered
	}
	x := h.extraLocked()
	x.backoffCap = retakeMaxBusy
	if down {
		x.backoffCap = retakeMax
	}
	if got {
		x.backoff = 0
	}
	h.scheduleLocked()
}

// adopt makes the handle the holder of h, a quorum of every group: the
// lock is held, and the replicas it lacks are taken in the background.
func (l *Lock) adopt(h *holder) (bool, error) {
	if !l.c.track(l) {
		h.giveUp()
		return false, ErrClosed
	}
	l.mu.Lock()
	h.mu.Lock()
	h.held = true
	h.taken = allGroups(len(h.groups))
	l.moveLocked(stateHeld, change{h: h})
	var buf [viewBufLen]bool
	if k := short(h.groups, h.taken, h.heldLocked(buf[:])); k >= 0 {
		// A replica was lost since the quorum was counted.
		g := h.groups[k]
		n := countIn(g, h.hasLocked)
		h.loseLocked(fmt.Errorf("%w: %s: %d of %d replicas left right after the acquire, quorum %d", ErrLockLost, l.what(), n, len(g.idx), g.quorum), "", k, n)
		return true, nil
	}
	if h.x != nil {
		h.x.backoff = 0
	}
	h.scheduleLocked()
	h.mu.Unlock()
	l.mu.Unlock()
	return true, nil
}

// token is Token's answer while the lock is held: the token of the
// replica it gave before, as long as that replica is held, else of the
// first replica held in the key's order; "" once a quorum of every
// group is no longer certainly held.
func (h *holder) token() string {
	h.mu.Lock()
	if len(h.slots) == 1 {
		g := h.slots[0].grant
		h.mu.Unlock()
		return grantToken(g)
	}
	gs := make([]*pool.Grant, len(h.slots))
	for i, s := range h.slots {
		gs[i] = s.grant
	}
	groups := h.takenLocked()
	shown := h.extraLocked().shown
	h.mu.Unlock()
	now := time.Now()
	var first *pool.Grant
	for i, g := range gs {
		if g == nil {
			continue
		}
		if !now.Before(g.Deadline()) {
			g.Drop(errDeadline)
			gs[i] = nil
			continue
		}
		if first == nil || g == shown {
			first = g
		}
	}
	if quorate(groups, func(i int) bool { return gs[i] != nil }) >= 0 {
		return ""
	}
	if first != shown {
		h.mu.Lock()
		h.x.shown = first
		h.mu.Unlock()
	}
	return first.Token()
}

// grantToken is g's token while its deadline lasts; past it the grant is
// dropped, and the token is "".
func grantToken(g *pool.Grant) string {
	if g == nil {
		return ""
	}
	if !time.Now().Before(g.Deadline()) {
		g.Drop(errDeadline)
		return ""
	}
	return g.Token()
}

// heldOn lists the servers the holder holds a grant of, in the key's
// order.
func (h *holder) heldOn() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, s := range h.slots {
		if s.grant != nil {
			out = append(out, s.addr)
		}
	}
	return out
}

// lease is the lease of the first grant held, or 0.
func (h *holder) lease() time.Duration {
	h.mu.Lock()
	var g *pool.Grant
	for _, s := range h.slots {
		if s.grant != nil {
			g = s.grant
			break
		}
	}
	h.mu.Unlock()
	if g == nil {
		return 0
	}
	_, lease := g.Lease()
	return lease
}
