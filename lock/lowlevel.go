package lock

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/dflock-go/dflock/wire"
)

// Conn runs the protocol's commands one at a time on a connection the
// caller dialled, like the Python client's module functions (acquire,
// release, renew, enqueue, wait). It has no pool, no renewal and no
// sharding: the caller renews, and locks live and die with this
// connection.
//
// It talks to one server and knows nothing of replicas: a lock taken
// through it is one replica's grant, not a replicated lock. To take a
// key replicated by hand, take it on a quorum of the key's servers
// (Client.ServersFor, Quorum), waiting only on the first that answers, as
// the package documentation's "Replicated locks" describes; mixing such
// hand-made locks with a Client's replicated locks on the same keys keeps
// mutual exclusion only if the hand-made ones follow those rules too.
//
// Each call honours ctx's deadline and cancellation; a call cut short
// leaves the connection out of step, and it must be closed.
type Conn struct {
	nc  net.Conn
	lr  *wire.LineReader
	buf []byte
	err error // set once the connection is out of step
}

// NewConn wraps a connection to a dflockd server.
func NewConn(nc net.Conn) *Conn {
	return &Conn{nc: nc, lr: wire.NewLineReader(nc, wire.MaxStatsLen)}
}

// Close closes the connection; the server releases what it held.
func (c *Conn) Close() error { return c.nc.Close() }

// do sends one request, with timeout and lease rounded up to whole
// seconds, and reads its reply. A well-formed failure reply is returned as
// the error (ErrTimeout, ErrMaxLocks, ...).
func (c *Conn) do(ctx context.Context, req *wire.Request, timeout, lease time.Duration) (wire.Response, error) {
	if c.err != nil {
		return wire.Response{}, c.err
	}
	// Rounded up, -500ms would become a try-lock and -2s a lease of -1.
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"timeout", timeout}, {"lease", lease}} {
		if d.v < 0 {
			return wire.Response{}, &wire.RequestError{Cmd: req.Cmd, Field: d.field, Value: d.v.String(), Rule: "must not be negative"}
		}
	}
	req.Timeout, req.Lease = seconds(timeout), seconds(lease)
	buf, err := req.Append(c.buf[:0])
	if err != nil {
		return wire.Response{}, err
	}
	c.buf = buf
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(dl)
	} else {
		c.nc.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()
	resp, err := c.exchange(buf, req.Cmd)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		} else if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			// The socket deadline fired a moment before ctx's own timer.
			err = context.DeadlineExceeded
		}
		c.err = fmt.Errorf("lock: connection out of step after %v", err)
		return wire.Response{}, err
	}
	return resp, resp.Err()
}

func (c *Conn) exchange(frame []byte, cmd wire.Command) (wire.Response, error) {
	if _, err := c.nc.Write(frame); err != nil {
		return wire.Response{}, err
	}
	line, err := c.lr.ReadLineLimit(wire.ReplyLimit(cmd))
	if err != nil {
		return wire.Response{}, err
	}
	return wire.ParseResponse(cmd, line)
}

func durationOf(secs int) time.Duration { return time.Duration(secs) * time.Second }

// Acquire takes key, waiting up to timeout (whole seconds, rounded up; 0
// is a try-lock) and asking for lease (0: the server's default). It
// returns the token and the granted lease, or ErrTimeout.
func (c *Conn) Acquire(ctx context.Context, key string, timeout, lease time.Duration) (string, time.Duration, error) {
	resp, err := c.do(ctx, &wire.Request{Cmd: wire.CmdLock, Key: key}, timeout, lease)
	return resp.Token, durationOf(resp.Lease), err
}

// Release releases key held with token (from any connection).
func (c *Conn) Release(ctx context.Context, key, token string) error {
	_, err := c.do(ctx, &wire.Request{Cmd: wire.CmdRelease, Key: key, Token: token}, 0, 0)
	return err
}

// Renew extends key's lease to lease (0: the server's default, which is
// not necessarily the lease it was taken with) and returns the new lease.
func (c *Conn) Renew(ctx context.Context, key, token string, lease time.Duration) (time.Duration, error) {
	resp, err := c.do(ctx, &wire.Request{Cmd: wire.CmdRenew, Key: key, Token: token}, 0, lease)
	return durationOf(resp.Lease), err
}

// Enqueue joins key's queue. If the key was free it is acquired at once:
// the status is Acquired with the token and lease; otherwise Queued, and
// Wait on this same connection completes it.
func (c *Conn) Enqueue(ctx context.Context, key string, lease time.Duration) (Status, string, time.Duration, error) {
	return c.enqueue(ctx, &wire.Request{Cmd: wire.CmdEnqueue, Key: key}, lease)
}

func (c *Conn) enqueue(ctx context.Context, req *wire.Request, lease time.Duration) (Status, string, time.Duration, error) {
	resp, err := c.do(ctx, req, 0, lease)
	if err != nil {
		return 0, "", 0, err
	}
	if resp.Status == wire.StatusQueued {
		return Queued, "", 0, nil
	}
	return Acquired, resp.Token, durationOf(resp.Lease), nil
}

// Wait waits up to timeout for the grant of this connection's Enqueue of
// key, and returns its token and lease (the lease restarts now), or
// ErrTimeout.
func (c *Conn) Wait(ctx context.Context, key string, timeout time.Duration) (string, time.Duration, error) {
	resp, err := c.do(ctx, &wire.Request{Cmd: wire.CmdWait, Key: key}, timeout, 0)
	return resp.Token, durationOf(resp.Lease), err
}

// SemAcquire takes one of limit slots of key; see Acquire.
func (c *Conn) SemAcquire(ctx context.Context, key string, limit int, timeout, lease time.Duration) (string, time.Duration, error) {
	resp, err := c.do(ctx, &wire.Request{Cmd: wire.CmdSemLock, Key: key, Limit: limit}, timeout, lease)
	return resp.Token, durationOf(resp.Lease), err
}

// SemRelease releases a slot of key held with token.
func (c *Conn) SemRelease(ctx context.Context, key, token string) error {
	_, err := c.do(ctx, &wire.Request{Cmd: wire.CmdSemRelease, Key: key, Token: token}, 0, 0)
	return err
}

// SemRenew extends a slot's lease; see Renew.
func (c *Conn) SemRenew(ctx context.Context, key, token string, lease time.Duration) (time.Duration, error) {
	resp, err := c.do(ctx, &wire.Request{Cmd: wire.CmdSemRenew, Key: key, Token: token}, 0, lease)
	return durationOf(resp.Lease), err
}

// SemEnqueue joins the queue of a semaphore of limit slots; see Enqueue.
func (c *Conn) SemEnqueue(ctx context.Context, key string, limit int, lease time.Duration) (Status, string, time.Duration, error) {
	return c.enqueue(ctx, &wire.Request{Cmd: wire.CmdSemEnqueue, Key: key, Limit: limit}, lease)
}

// SemWait completes a SemEnqueue; see Wait.
func (c *Conn) SemWait(ctx context.Context, key string, timeout time.Duration) (string, time.Duration, error) {
	resp, err := c.do(ctx, &wire.Request{Cmd: wire.CmdSemWait, Key: key}, timeout, 0)
	return resp.Token, durationOf(resp.Lease), err
}

// Stats returns the server's state.
func (c *Conn) Stats(ctx context.Context) (wire.Stats, error) {
	resp, err := c.do(ctx, &wire.Request{Cmd: wire.CmdStats}, 0, 0)
	if err != nil {
		return wire.Stats{}, err
	}
	return wire.ParseStats(resp.Body)
}

// Auth authenticates the connection; it must be the first call on a server
// with an auth token. A wrong secret is ErrAuth, and the server closes.
func (c *Conn) Auth(ctx context.Context, secret string) error {
	_, err := c.do(ctx, &wire.Request{Cmd: wire.CmdAuth, Secret: secret}, 0, 0)
	return err
}
