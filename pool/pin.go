package pool

import (
	"context"

	"github.com/jackc/puddle/v2"

	"github.com/dflock-go/dflock/wire"
)

// Pinned is an exclusive connection, for blocking requests and for the
// enqueue and wait of a two-phase acquire, which must share a connection.
type Pinned struct {
	p   *Pool
	res *puddle.Resource[*Conn]
	c   *Conn
	// unpinned is set once the connection went back (or will go back, when
	// an abandoned request drains) to the pool.
	unpinned bool
}

// keepAlive is a request with no effect: a release with a token the server
// never issues, answered "error" at O(1) cost. Unlike stats, its cost does
// not grow with the number of keys the server tracks.
var keepAlive = wire.Request{Cmd: wire.CmdRelease, Key: "_dflock_keepalive", Token: "keepalive"}

// Pin takes an exclusive connection, dialling one if none is idle and the
// pool has room, else waiting for one until ctx ends.
func (p *Pool) Pin(ctx context.Context) (*Pinned, error) {
	for {
		if p.isClosing() {
			return nil, ErrClosed
		}
		res, err := p.excl.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		c := res.Value()
		if c.Err() != nil {
			res.Destroy()
			continue
		}
		if res.IdleDuration() > p.cfg.HealthCheckAfter {
			// It sat idle: the server may have closed it meanwhile.
			if _, err := c.do(ctx, &keepAlive); err != nil {
				if c.Err() == nil {
					// ctx ended; the ping drains harmlessly.
					res.Release()
					return nil, err
				}
				res.Destroy()
				continue
			}
		}
		return &Pinned{p: p, res: res, c: c}, nil
	}
}

// Conn returns the pinned connection.
func (pn *Pinned) Conn() *Conn { return pn.c }

// Do sends req on the pinned connection and waits for its reply.
//
// Cancelling ctx while a blocking request waits on the server returns at
// once and never costs another lock: if the connection holds no lock, it
// is closed, which is the protocol's only way to cancel a wait; if it
// holds locks, the wait runs out on the server and whatever it grants is
// released at once, and the connection returns to the pool only then.
func (pn *Pinned) Do(ctx context.Context, req *wire.Request) (Result, error) {
	c := pn.c
	cl, err := c.send(req, false)
	if err != nil {
		return Result{}, err
	}
	res, abandoned, err := c.await(ctx, cl)
	if !abandoned {
		return res, err
	}
	if c.Holds() == 0 {
		c.close()
		return Result{}, ctx.Err()
	}
	// The marker's reply comes after the abandoned one, and after the
	// release of anything it granted is queued.
	marker, err := c.send(&keepAlive, false)
	if err == nil && !pn.unpinned {
		pn.unpinned = true
		pn.p.cleanups.Add(1)
		go func() {
			defer pn.p.cleanups.Done()
			<-marker.done
			marker.recycle()
			pn.giveBack()
		}()
	}
	return Result{}, ctx.Err()
}

// Unpin returns the connection to the pool. Safe to call twice.
func (pn *Pinned) Unpin() {
	if pn.unpinned {
		return
	}
	pn.unpinned = true
	pn.giveBack()
}

func (pn *Pinned) giveBack() {
	if pn.c.Err() != nil {
		pn.res.Destroy()
		return
	}
	pn.res.Release()
}
