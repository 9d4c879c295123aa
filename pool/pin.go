package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/puddle/v2"

	"github.com/dflock-go/dflock/wire"
)

// Pinned is an exclusive connection, for blocking requests and for the
// enqueue and wait of a two-phase acquire, which must share a connection.
//
// Pin hands out only clean connections: they hold no lock, have no
// enqueue registered and no request pending. So a blocking request never
// waits on a connection that holds locks. A connection that holds locks
// when it is unpinned leaves puddle (so it no longer counts against
// MaxConns, and a lock held after a wait never starves the next wait of a
// connection); the pool keeps it talking until the last of its locks
// ends, then offers it to the next Pin.
//
// The protocol cannot cancel a wait, and dflockd does not even notice a
// closed connection while it waits: the wait keeps its place in the queue
// until its timeout, and a lock granted to it then is released only when
// the server next reads the dead connection, or (with
// -auto-release-on-disconnect=false) when its lease runs out. So a wait
// given up by its caller keeps its connection, out of puddle, until the
// server answers; a lock granted then is released at once. There is no
// bound on how many drain at once: closing one would not free its place
// on the server, which still counts the connection (against its
// --max-connections too) until the wait ends, and would leave a lock
// granted to it held by nobody on a server with auto-release off. Each
// ends by its wait's timeout; past that and drainSlack without an
// answer, the connection is closed.
type Pinned struct {
	p        *Pool
	c        *Conn
	unpinned bool
	// spent: a blocking request on it was given up and still waits, so
	// nothing more may be sent on it.
	spent bool
}

// drainSlack is how long past a wait's own timeout a connection draining
// it waits for the server's answer before it is closed.
const drainSlack = 5 * time.Second

// keepAlive is a request with no effect: a release with a token the server
// never issues, answered "error" at O(1) cost. Unlike stats, its cost does
// not grow with the number of keys the server tracks.
var keepAlive = wire.Request{Cmd: wire.CmdRelease, Key: "_dflock_keepalive", Token: "keepalive"}

// ErrHoldsLocks refuses a blocking request on a pinned connection that
// holds locks: the request would hold up their renewals and release, and
// a connection that must be closed (a stuck server) would take them along.
var ErrHoldsLocks = errors.New("pool: blocking request on a connection that holds locks")

// Pin takes a clean exclusive connection, dialling one if none is idle and
// the pool has room, else waiting until one is free or ctx ends (its error
// is returned then). Connections kept by the locks they hold do not count
// against MaxConns.
func (p *Pool) Pin(ctx context.Context) (*Pinned, error) { return p.pin(ctx, false) }

// pin is Pin, or TryPin when try is set.
func (p *Pool) pin(ctx context.Context, try bool) (*Pinned, error) {
	for {
		if p.isClosing() {
			return nil, ErrClosed
		}
		// Always through puddle, so that its slots bound the waits in
		// progress; a connection freed by the locks it held comes back
		// through puddle's constructor (see New).
		var res *puddle.Resource[*Conn]
		var err error
		if try {
			res, err = p.tryAcquire(ctx)
		} else {
			res, err = p.excl.Acquire(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if p.isClosing() {
				return nil, ErrClosed
			}
			return nil, err
		}
		c, idle := res.Value(), res.IdleDuration()
		c.res = res
		c.mu.Lock()
		broken := c.broken != nil
		if !broken {
			c.owner = ownerPinner
		}
		c.mu.Unlock()
		if broken {
			(&Pinned{p: p, c: c}).Unpin()
			continue
		}
		if idle > p.cfg.HealthCheckAfter {
			// It sat idle: the server may have closed it meanwhile.
			if _, err := c.do(ctx, &keepAlive, time.Time{}); err != nil {
				pn := &Pinned{p: p, c: c}
				if c.Err() == nil {
					pn.Unpin() // ctx ended; the ping drains harmlessly
					return nil, err
				}
				pn.Unpin()
				continue
			}
		}
		return &Pinned{p: p, c: c}, nil
	}
}

// ErrNoFreeConn: TryPin found no idle exclusive connection.
var ErrNoFreeConn = errors.New("pool: no exclusive connection is free")

// TryPin is Pin that never waits for a connection to be freed: it takes
// an idle one, or dials one if the pool has room, and otherwise returns
// ErrNoFreeConn at once. A caller that holds locks uses it
// before a blocking request: waiting for a connection that a wait for one
// of its own locks holds would never end.
func (p *Pool) TryPin(ctx context.Context) (*Pinned, error) { return p.pin(ctx, true) }

// tryAcquire takes an idle exclusive connection from puddle, dialling
// one first if none is idle and there is room; ErrNoFreeConn if there is
// none to be had without waiting for one to be freed.
func (p *Pool) tryAcquire(ctx context.Context) (*puddle.Resource[*Conn], error) {
	if p.excl.Stat().IdleResources() == 0 {
		err := p.excl.CreateResource(ctx)
		if errors.Is(err, puddle.ErrNotAvailable) {
			return nil, ErrNoFreeConn
		}
		if err != nil {
			return nil, err
		}
	}
	// Someone waiting in Pin may have taken it meanwhile. Then puddle
	// dials another in the background if there is room (that context
	// outlives the call), for the next caller.
	res, err := p.excl.TryAcquire(context.WithoutCancel(ctx))
	if errors.Is(err, puddle.ErrNotAvailable) {
		return nil, ErrNoFreeConn
	}
	return res, err
}

// Conn returns the pinned connection.
func (pn *Pinned) Conn() *Conn { return pn.c }

// Addr returns the address of the pinned connection's server.
func (pn *Pinned) Addr() string { return pn.c.p.addr }

// Do sends req on the pinned connection and waits for its reply.
//
// If ctx ends first, Do returns ctx's error at once. The request is left
// to its reply, and a lock that reply grants is released at once. After a
// blocking request is given up, the pinned connection takes no other
// request (it would wait behind it); Unpin it.
func (pn *Pinned) Do(ctx context.Context, req *wire.Request) (Result, error) {
	return pn.do(ctx, req, false)
}

// Withdraw gives up the enqueue registered for key on the pinned
// connection: a wait that cannot block consumes the registration, and a
// lock it grants (the key was freed for us meanwhile) is released at
// once. The connection is clean afterwards.
func (pn *Pinned) Withdraw(ctx context.Context, key string, semaphore bool) error {
	fam := &wire.LockFamily
	if semaphore {
		fam = &wire.SemaphoreFamily
	}
	_, err := pn.do(ctx, &wire.Request{Cmd: fam.Wait, Key: key, Timeout: 0}, true)
	return err
}

func (pn *Pinned) do(ctx context.Context, req *wire.Request, discard bool) (Result, error) {
	if err := req.Validate(); err != nil {
		return Result{}, err
	}
	if pn.unpinned {
		return Result{}, fmt.Errorf("%w: the connection was unpinned", errNotSent)
	}
	if pn.spent {
		return Result{}, fmt.Errorf("%w: the connection still waits on a request given up", errNotSent)
	}
	c := pn.c
	c.mu.Lock()
	if holdsUp(req) && len(c.grants) > 0 {
		c.mu.Unlock()
		return Result{}, ErrHoldsLocks
	}
	cl, err := c.queueLocked(req, false)
	if cl != nil {
		cl.discard = discard
	}
	c.mu.Unlock()
	if err != nil {
		return Result{}, err
	}
	res, abandoned, err := c.await(ctx, cl)
	if abandoned && holdsUp(req) {
		pn.spent = true
	}
	return res, err
}

// Unpin returns the connection to the pool: clean, it is idle for the
// next caller; holding locks, or waiting on a blocking request given up,
// it stays out of the pool until they end or the answer comes; otherwise
// (broken, or an enqueue still registered) it is closed. Safe to call
// twice.
func (pn *Pinned) Unpin() {
	if pn.unpinned {
		return
	}
	pn.unpinned = true
	c := pn.c
	c.mu.Lock()
	res := c.res
	next := ownerPuddle
	switch {
	case len(c.grants) > 0:
		next = ownerKept
	case c.broken == nil && c.waitingLocked():
		next, c.draining = ownerKept, true
	case c.broken != nil || !c.cleanLocked():
		next = ownerNone
	}
	c.owner = next
	if next != ownerPuddle {
		c.res = nil
	}
	c.mu.Unlock()
	switch {
	case next == ownerKept && res != nil:
		// Out of puddle: the lock (or the wait) keeps the connection, not
		// a slot.
		res.Hijack()
	case next == ownerNone:
		if res != nil {
			res.Hijack() // closed by retire, not by puddle's destructor
		}
		c.retire()
	case next == ownerPuddle && res != nil:
		res.Release()
	case next == ownerPuddle:
		pn.p.addFreed(c)
	}
}

// addFreed offers a clean connection that left puddle while it held locks
// to the next Pin: back into puddle if it has room (so it counts against
// MaxConns again), else in the freed list, which puddle's constructor
// takes from before dialling, or closes it if enough wait there already.
func (p *Pool) addFreed(c *Conn) {
	p.freedMu.Lock()
	keep := !p.isClosing() && len(p.freed) < p.cfg.MaxConns-p.cfg.SharedConns
	if keep {
		p.freed = append(p.freed, freedConn{c: c, since: time.Now()})
	}
	p.freedMu.Unlock()
	if !keep {
		c.retire()
		return
	}
	if p.excl.Stat().TotalResources() < int32(p.cfg.MaxConns-p.cfg.SharedConns) {
		p.spawn(func() {
			// The constructor takes the freed connection; it must not
			// dial if another Pin took it first.
			p.excl.CreateResource(context.WithValue(context.Background(), freedOnly{}, true))
		})
	}
}

// freedOnly, set in a constructor's context, makes it take a freed
// connection or fail, never dial.
type freedOnly struct{}

// errNoFreed: no freed connection for a constructor told not to dial.
var errNoFreed = errors.New("pool: no freed connection")

// takeFreed returns a connection from the freed list, and how long it sat
// there, or nil.
func (p *Pool) takeFreed() (*Conn, time.Duration) {
	p.freedMu.Lock()
	defer p.freedMu.Unlock()
	n := len(p.freed)
	if n == 0 {
		return nil, 0
	}
	f := p.freed[n-1]
	p.freed[n-1] = freedConn{}
	p.freed = p.freed[:n-1]
	return f.c, time.Since(f.since)
}

// freedConn is a clean connection outside puddle, waiting for a Pin.
type freedConn struct {
	c     *Conn
	since time.Time
}

// holdsUp reports whether the server may sit on req: a lock or wait with
// a timeout. A wait with none answers at once.
func holdsUp(req *wire.Request) bool { return req.Blocking() && req.Timeout > 0 }
