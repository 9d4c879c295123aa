package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dflock-go/dflock/wire"
)

// Grant is one lock or slot the server granted: one token, held through
// the connection whose request it answered, from the reply that granted
// it to its release or loss. Everything that happens to the grant (a
// renewal confirmed or refused, its release, the connection breaking, its
// deadline passing) applies to this object alone; a reply about another
// token can never touch it.
type Grant struct {
	c     *Conn
	key   string
	token string
	fam   *wire.Family

	// Guarded by c.mu (the connection's mutex).
	since  time.Time     // the server's lease began no earlier than this
	lease  time.Duration // the lease the server last confirmed
	state  grantState
	err    error        // why it was lost
	onLost LossListener // hears once, outside any lock, when it is lost
}

type grantState int

const (
	grantHeld grantState = iota
	grantReleased
	grantLost
)

// ErrGrantLost wraps every reason a grant was lost: its connection
// broke, a renewal was refused, or it was dropped (its deadline passed).
var ErrGrantLost = errors.New("pool: grant lost")

// ErrNotHeld is returned for a grant already released or lost.
var ErrNotHeld = errors.New("pool: grant not held")

func newGrant(c *Conn, req *wire.Request, resp wire.Response, sent time.Time) *Grant {
	return &Grant{
		c:     c,
		key:   req.Key,
		token: resp.Token,
		fam:   wire.FamilyOf(req.Cmd),
		since: sent,
		lease: time.Duration(resp.Lease) * time.Second,
	}
}

// Key returns the key the grant is for.
func (g *Grant) Key() string { return g.key }

// Token returns the server's token for the grant.
func (g *Grant) Token() string { return g.token }

// Addr returns the server's address.
func (g *Grant) Addr() string { return g.c.p.addr }

// Pool returns the pool of the grant's server.
func (g *Grant) Pool() *Pool { return g.c.p }

// Conn returns the connection that owns the grant on the server.
func (g *Grant) Conn() *Conn { return g.c }

// Lease returns the last lease the server confirmed and the moment it
// began at the earliest: the request that obtained it was queued then,
// and the server counts the lease from when it handled it, later.
func (g *Grant) Lease() (since time.Time, lease time.Duration) {
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	return g.since, g.lease
}

// Deadline is the moment up to which the grant is certainly still ours,
// less a margin, so that a loss is reported before the server could hand
// the lock on. The server keeps the grant until the earlier of the end of
// its lease (counted from its start at the earliest) and its read timeout
// on the owning connection (counted from the last request it answered
// there). Zero once the grant is released or lost.
func (g *Grant) Deadline() time.Time {
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	if g.state != grantHeld {
		return time.Time{}
	}
	return g.deadlineLocked()
}

func (g *Grant) deadlineLocked() time.Time {
	d := g.since.Add(g.lease - min(g.lease/20, 250*time.Millisecond))
	rt := g.c.p.cfg.ServerReadTimeout
	if c := g.c.heard.Add(rt - min(rt/10, time.Second)); c.Before(d) {
		d = c
	}
	return d
}

// Err returns nil while the grant is held, why it was lost, or ErrNotHeld
// once released.
func (g *Grant) Err() error {
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	switch g.state {
	case grantLost:
		return g.err
	case grantReleased:
		return ErrNotHeld
	}
	return nil
}

// OnLost arranges for f to run once, with the reason, when the grant is
// lost. If it is lost already, f runs now. It replaces an earlier f (or
// listener, see Listen).
func (g *Grant) OnLost(f func(error)) { g.Listen(lossFunc(f)) }

// LossListener hears of the loss of the grants it listens to (see
// Listen).
type LossListener interface {
	// GrantLost is told that g was lost, and why: once per Listen (at
	// once if g was lost already). It runs with no lock of the pool
	// held.
	GrantLost(g *Grant, err error)
}

// Listen is OnLost with a listener instead of a function: one that holds
// many grants (a lock's replicas, say) listens to each without a closure
// per grant.
func (g *Grant) Listen(ln LossListener) {
	g.c.mu.Lock()
	lost, err := g.state == grantLost, g.err
	if !lost {
		g.onLost = ln
	}
	g.c.mu.Unlock()
	if lost {
		ln.GrantLost(g, err)
	}
}

// lossFunc is the listener of OnLost.
type lossFunc func(error)

func (f lossFunc) GrantLost(_ *Grant, err error) { f(err) }

// extendLocked records a lease the server confirmed (or restarted) for a
// request queued at sent. The server sets the lease to end its length
// after it handled the request, so the newest request's answer is the
// server's state (which may end sooner than before, for a shorter lease).
func (g *Grant) extendLocked(sent time.Time, leaseSecs int) {
	if g.state != grantHeld || sent.Before(g.since) {
		return
	}
	g.since, g.lease = sent, time.Duration(leaseSecs)*time.Second
}

// loseLocked ends a held grant as lost; the caller calls notify once c.mu
// is released. It returns g for that.
func (g *Grant) loseLocked(err error) *Grant {
	if g.state != grantHeld {
		return nil
	}
	g.state, g.err = grantLost, err
	delete(g.c.grants, g.token)
	return g
}

// notify runs the loss callback of a grant that loseLocked ended; nil is
// a no-op, so callers may pass loseLocked's result straight on.
func (g *Grant) notify() {
	if g == nil {
		return
	}
	g.c.mu.Lock()
	ln := g.onLost
	g.onLost = nil
	err := g.err
	g.c.mu.Unlock()
	if ln != nil {
		ln.GrantLost(g, err)
	}
}

// Drop ends the grant as lost for reason (its deadline passed without a
// confirmed renewal, say, or nobody wants it) and gives it back without
// waiting, in case the server still holds it (a renewal stuck behind a
// stalled server), so that it is never left held by nobody. A no-op
// unless held.
func (g *Grant) Drop(reason error) {
	if !g.lose(fmt.Errorf("%w: %w", ErrGrantLost, reason)) {
		return
	}
	// The holder has heard; only now does the release go out, on the
	// owning connection (unless it has just been closed, which releases
	// it too).
	c := g.c
	c.mu.Lock()
	if c.broken == nil {
		if _, err := c.queueLocked(g.releaseRequest(), true); err != nil {
			c.p.log.Debug("pool: release of an expired grant not queued", "addr", c.p.addr, "err", err)
		}
	}
	c.mu.Unlock()
}

// lose ends the grant as lost for err and runs its loss callback; false
// if it was not held. A refused renewal loses a grant this way: the server
// no longer holds it, so there is nothing to give back.
func (g *Grant) lose(err error) bool {
	c := g.c
	c.mu.Lock()
	lost := g.loseLocked(err)
	after := c.afterChangeLocked()
	c.mu.Unlock()
	after()
	lost.notify()
	return lost != nil
}

func (g *Grant) releaseRequest() *wire.Request {
	return &wire.Request{Cmd: g.fam.Release, Key: g.key, Token: g.token}
}

func (g *Grant) renewRequest(leaseSecs int) wire.Request {
	return wire.Request{Cmd: g.fam.Renew, Key: g.key, Token: g.token, Lease: leaseSecs}
}

// endLocked marks a held grant released, or says why it was not held.
func (g *Grant) endLocked() error {
	if g.state != grantHeld {
		if g.err != nil {
			return g.err
		}
		return ErrNotHeld
	}
	g.state, g.onLost = grantReleased, nil
	delete(g.c.grants, g.token)
	return nil
}

// Release gives the grant back to the server, on the connection that
// owns it. If the grant was lost it returns the loss (matching
// ErrGrantLost) and sends nothing. If that connection breaks before the
// answer, the release is sent again on another connection: tokens are
// unique, so it can only end this grant. An "ok" there means the server
// still held the grant, and Release succeeds; a refusal means the server
// had let it go (with the connection, maybe before this call, or its lease
// ran out): an error matching ErrGrantLost. So is the server's refusal on
// the owning connection. If ctx ends first, the release still goes out.
// Safe to call twice: the second call returns ErrNotHeld.
func (g *Grant) Release(ctx context.Context) error {
	r := g.StartRelease()
	return r.Await(ctx, time.Time{})
}

// Releasing is a release sent by StartRelease, whose answer Await takes.
type Releasing struct {
	g       *Grant
	call    Call  // the release request, on the grant's connection
	notHeld error // why nothing was sent: the grant was not held
}

// Arriving reports whether the release's answer may be held up in this
// process rather than by the server, as Call.Arriving does.
func (r *Releasing) Arriving() bool { return r.call.Arriving() }

// StartRelease sends the grant's release, as Release does, and returns at
// once; Await takes the answer. The releases of many grants go out this
// way at once, with no goroutine each. Every release started must be
// awaited, for its answer, and for a connection that breaks meanwhile
// (the release then goes out again on another, see Release).
func (g *Grant) StartRelease() Releasing {
	c := g.c
	c.mu.Lock()
	if err := g.endLocked(); err != nil {
		c.mu.Unlock()
		return Releasing{g: g, notHeld: err}
	}
	// Queued before the connection can move on (to the next Pin, or
	// closed if it is not clean), so the release goes out first.
	cl, err := c.queueLocked(g.releaseRequest(), false)
	after := c.afterChangeLocked()
	c.mu.Unlock()
	after()
	return Releasing{g: g, call: Call{p: c.p, c: c, cl: cl, err: err}}
}

// Notify is Call.Notify for the release.
func (r *Releasing) Notify(ch chan<- int, tag int) { r.call.Notify(ch, tag) }

// Wait is Call.Wait for the release.
func (r *Releasing) Wait(ctx context.Context, deadline time.Time) error {
	return r.call.Wait(ctx, deadline)
}

// Await waits for the answer to the release and says what it means, as
// Release does. If ctx ends or deadline (unless zero) passes first, it
// returns an error, and the release still goes out.
func (r *Releasing) Await(ctx context.Context, deadline time.Time) error {
	if r.notHeld != nil {
		return r.notHeld
	}
	cl, err := r.call.cl, r.call.err
	r.call.cl, r.notHeld = nil, ErrNotHeld // awaited: as a second Release
	return r.g.released(ctx, cl, err, deadline)
}

// released waits for the answer to g's release, queued as cl (or the
// error queueing it), until ctx ends or deadline (unless zero), and says
// what it means, as Release documents.
func (g *Grant) released(ctx context.Context, cl *call, err error, deadline time.Time) error {
	var res Result
	if err == nil {
		res, _, err = g.c.awaitBy(ctx, cl, deadline)
	}
	switch {
	case errors.Is(err, ErrBroken), errors.Is(err, errNotSent):
		return g.releaseElsewhere(ctx, err, deadline)
	case err != nil:
		return fmt.Errorf("pool: release of %q on %s: %w (it goes out when the connection can write)", g.key, g.Addr(), err)
	}
	if err := res.Resp.Err(); err != nil {
		return fmt.Errorf("%w: %q was no longer held on %s: %w", ErrGrantLost, g.key, g.Addr(), err)
	}
	return nil
}

// ReleaseEach releases many grants as Release does each, but the releases
// of one connection go out together, in one write: a set of locks let go
// at once costs a round trip per connection, not per lock. Error i is
// Release's for grant i.
func ReleaseEach(ctx context.Context, gs []*Grant) []error {
	errs := make([]error, len(gs))
	calls := make([]*call, len(gs))
	sent := make([]bool, len(gs)) // held: its release was queued
	eachByConn(len(gs), func(i int) *Conn { return gs[i].c }, func(c *Conn, i int) {
		if errs[i] = gs[i].endLocked(); errs[i] == nil {
			sent[i] = true
			calls[i], errs[i] = c.queueLocked(gs[i].releaseRequest(), false)
		}
	}, (*Conn).afterChangeLocked)
	for i, g := range gs {
		if sent[i] {
			errs[i] = g.released(ctx, calls[i], errs[i], time.Time{})
		}
	}
	return errs
}

// releaseElsewhere sends the release of a grant whose connection broke
// before the answer on another connection. Without it, a server that
// keeps locks after a disconnect (-auto-release-on-disconnect=false)
// would hold this one for its whole lease.
func (g *Grant) releaseElsewhere(ctx context.Context, broke error, deadline time.Time) error {
	lost := fmt.Errorf("%w: %q: its connection to %s broke before the release was answered, which released it: %w", ErrGrantLost, g.key, g.Addr(), broke)
	if ctx.Err() != nil {
		return lost
	}
	res, err := g.c.p.DoBy(ctx, g.releaseRequest(), deadline)
	if err == nil {
		err = res.Resp.Err()
	}
	if err != nil {
		return fmt.Errorf("%w (sent again on another connection: %w)", lost, err)
	}
	return nil
}

// Confirm renews the grant on its own connection and waits for the
// answer, which proves both its lease and the connection alive from the
// moment it was sent. A grant that reached the client late (after a long
// blocking wait) is confirmed before it is handed out. A refusal means the
// server no longer held it: the grant is lost and the error says so.
func (g *Grant) Confirm(ctx context.Context, leaseSecs int) error {
	req := g.renewRequest(leaseSecs)
	res, err := g.c.do(ctx, &req, time.Time{})
	if err != nil {
		return err
	}
	return g.apply(res)
}

// apply records the server's answer to a renewal of g. An answer for a
// grant released or lost meanwhile belongs to nothing: ErrNotHeld.
func (g *Grant) apply(res Result) error {
	if err := res.Resp.Err(); err != nil {
		err = fmt.Errorf("%w: %s refused to renew %q: %w", ErrGrantLost, g.Addr(), g.key, err)
		if !g.lose(err) {
			return ErrNotHeld
		}
		return err
	}
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	if g.state != grantHeld {
		return ErrNotHeld
	}
	g.extendLocked(res.Sent, res.Resp.Lease)
	return nil
}

// Renewal is one grant to renew and the lease, in whole seconds, to renew
// it for. Send the lease it was taken with: without one the server resets
// it to its default.
type Renewal struct {
	Grant *Grant
	Lease int
}

// Renew renews grants held through this pool's server, each on the
// connection that owns it: the grant lives there anyway, so its renewal
// needs no other connection (one the server may refuse at its
// --max-connections), and it tells the server that connection is alive.
// The renewals of one connection go out together, in one write. Error i
// is nil when grant i was renewed; it matches ErrGrantLost when the
// server refused (the grant is then lost, and its OnLost callback has
// run); any other error means the renewal did not get through and may be
// tried again while the grant's deadline lasts. Grants no longer held are
// skipped with ErrNotHeld.
func (p *Pool) Renew(ctx context.Context, rs []Renewal) []error {
	errs := make([]error, len(rs))
	calls := make([]*call, len(rs))
	eachByConn(len(rs), func(i int) *Conn { return rs[i].Grant.c }, func(c *Conn, i int) {
		req := rs[i].Grant.renewRequest(rs[i].Lease)
		calls[i], errs[i] = c.queueLocked(&req, false)
	}, nil)
	for i, cl := range calls {
		if cl == nil {
			continue
		}
		g := rs[i].Grant
		res, _, err := g.c.await(ctx, cl)
		if err == nil {
			err = g.apply(res)
		}
		errs[i] = err
	}
	return errs
}

// releaseLost sends, in the background and best effort, the release of
// grants lost with a broken connection, on another connection. Usually
// the server released them with the connection already and answers
// "error". But a server with -auto-release-on-disconnect=false keeps
// them for their whole lease, and so does any server for a connection
// broken on the client's side only (a half-open one) until its read
// timeout. Tokens are unique, so these releases can end nothing else.
func (p *Pool) releaseLost(gs []*Grant) {
	reqs := make([]wire.Request, len(gs))
	for i, g := range gs {
		reqs[i] = *g.releaseRequest()
	}
	p.spawn(func() {
		// Pool.Close ends it sooner: its connections close under it.
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout+releaseLostTimeout)
		defer cancel()
		p.sendReleases(ctx, reqs)
	})
}

// sendReleases sends releases in batches on shared connections, best
// effort. The connection picked may be one that broke and does not know
// it yet: what did not get through is sent again, twice at most.
func (p *Pool) sendReleases(ctx context.Context, reqs []wire.Request) {
	for attempt := 0; attempt < 3 && len(reqs) > 0 && ctx.Err() == nil && !p.isClosing(); attempt++ {
		var again []wire.Request
		for i := 0; i < len(reqs); i += releaseChunk {
			chunk := reqs[i:min(i+releaseChunk, len(reqs))]
			_, errs := p.DoAll(ctx, chunk)
			for j, err := range errs {
				if err != nil {
					again = append(again, chunk[j])
				}
			}
		}
		reqs = again
	}
}

// releaseLostTimeout bounds the releases of grants lost with a
// connection; releaseChunk is how many go out in one batch.
const (
	releaseLostTimeout = 5 * time.Second
	releaseChunk       = 4096
)

// ReleaseAll gives many grants back in batches on shared connections,
// best effort (Client.Close, say). Grants not held are skipped.
func (p *Pool) ReleaseAll(ctx context.Context, gs []*Grant) {
	reqs := make([]wire.Request, 0, len(gs))
	for _, g := range gs {
		g.c.mu.Lock()
		err := g.endLocked()
		after := g.c.afterChangeLocked()
		g.c.mu.Unlock()
		after()
		if err == nil {
			reqs = append(reqs, *g.releaseRequest())
		}
	}
	p.sendReleases(ctx, reqs)
}

// eachByConn calls f(c, i) for every i below n, under the mu of c =
// conn(i), a connection at a time: the requests f queues on one
// connection go out in one write. When set, after runs at the end of
// each connection's turn, under its mu, and what it returns once the mu
// is released.
func eachByConn(n int, conn func(i int) *Conn, f func(c *Conn, i int), after func(c *Conn) func()) {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	// Connections are numbered per pool: the address tells them apart.
	slices.SortFunc(order, func(a, b int) int {
		ca, cb := conn(a), conn(b)
		if ca.id != cb.id {
			return cmp.Compare(ca.id, cb.id)
		}
		return strings.Compare(ca.p.addr, cb.p.addr)
	})
	for k := 0; k < n; {
		c := conn(order[k])
		c.mu.Lock()
		for ; k < n && conn(order[k]) == c; k++ {
			f(c, order[k])
		}
		then := noop
		if after != nil {
			then = after(c)
		}
		c.mu.Unlock()
		then()
	}
}
