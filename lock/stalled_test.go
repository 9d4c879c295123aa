package lock_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// Every blocking call against a stopped server returns within its
// timeout and 50 ms, with an error that names the server, never "busy".
// The server stops before the call (its first request gets no answer), or,
// for the calls that wait, while the call waits for a key it found busy
// (the wait gets no answer, nor a ping at its end).
func TestEveryCallIsBoundedAgainstAStoppedServer(t *testing.T) {
	const timeout = 700 * time.Millisecond
	opt := lock.AcquireTimeout(timeout)
	// call runs one call on key, with the other keys of the test at hand.
	type call func(ctx context.Context, c *lock.Client, key string) error
	notHeld := func(ok bool, err error) error {
		if err == nil && ok {
			return errors.New("acquired from a stopped server")
		}
		return err
	}
	calls := []struct {
		name  string
		bound time.Duration
		run   call
	}{
		{"Acquire", timeout, func(ctx context.Context, c *lock.Client, k string) error {
			return notHeld(c.Lock(k, opt).Acquire(ctx))
		}},
		{"TryAcquire", lock.DefaultReplicaTimeout, func(ctx context.Context, c *lock.Client, k string) error {
			return notHeld(c.Lock(k, opt).TryAcquire(ctx))
		}},
		{"WithLock", timeout, func(ctx context.Context, c *lock.Client, k string) error {
			return c.WithLock(ctx, k, func(context.Context) error { return errors.New("ran without the lock") }, opt)
		}},
		{"Semaphore.Acquire", timeout, func(ctx context.Context, c *lock.Client, k string) error {
			return notHeld(c.Semaphore(k, 1, opt).Acquire(ctx))
		}},
		{"Enqueue", timeout, func(ctx context.Context, c *lock.Client, k string) error {
			_, err := c.Lock(k, opt).Enqueue(ctx)
			return err
		}},
		{"TryLockMany", lock.DefaultReplicaTimeout, func(ctx context.Context, c *lock.Client, k string) error {
			_, _, err := c.TryLockMany(ctx, []string{k}, opt)
			return err
		}},
		{"LockAll", timeout, func(ctx context.Context, c *lock.Client, k string) error {
			_, err := c.LockAll(ctx, []string{k}, opt)
			return err
		}},
		{"SemaphoreAll", timeout, func(ctx context.Context, c *lock.Client, k string) error {
			_, err := c.SemaphoreAll(ctx, []string{k}, 1, opt)
			return err
		}},
	}
	for _, cl := range calls {
		t.Run(cl.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newVirtualFleet(t, 1, fakeserver.Config{})
				srv := f.server(t, 0)
				c := f.client(t, lock.Config{})
				mustAcquire(t, c.Lock(uniqueKey(t, "warm"))) // connected
				srv.Stall(time.Hour)
				defer srv.Unstall()
				began := time.Now()
				err := cl.run(context.Background(), c, uniqueKey(t, "k"))
				assert.LessOrEqual(t, time.Since(began), cl.bound+50*time.Millisecond)
				require.Error(t, err)
				assert.ErrorIs(t, err, pool.ErrNoReply)
				assert.Contains(t, err.Error(), srv.Addr())
			})
		})
	}
}

// A call that waits for a busy key on a server that stops meanwhile
// returns at its timeout and 50 ms: the wait got no answer, nor did a
// ping at its end, and the error names the server. On a server that
// answers, the same timeout is "not acquired", with no error, at the
// timeout itself.
func TestAWaitOnAStoppedServerSaysSo(t *testing.T) {
	const timeout = 700 * time.Millisecond
	for _, stopped := range []bool{false, true} {
		for _, twoPhase := range []bool{false, true} {
			name := map[bool]string{false: "Acquire", true: "Wait"}[twoPhase]
			if stopped {
				name += "/stopped"
			}
			t.Run(name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					f := newVirtualFleet(t, 1, fakeserver.Config{})
					srv := f.server(t, 0)
					holder, c := f.client(t, lock.Config{}), f.client(t, lock.Config{})
					k := uniqueKey(t, "k")
					mustAcquire(t, holder.Lock(k))
					l := c.Lock(k, lock.AcquireTimeout(timeout))
					if twoPhase {
						st, err := l.Enqueue(context.Background())
						require.NoError(t, err)
						require.Equal(t, lock.Queued, st)
					}
					done := make(chan error, 1)
					began := time.Now()
					go func() {
						var ok bool
						var err error
						if twoPhase {
							ok, err = l.Wait(context.Background(), timeout)
						} else {
							ok, err = l.Acquire(context.Background())
						}
						if ok {
							err = errors.New("acquired a held key")
						}
						done <- err
					}()
					synctest.Wait()
					if stopped {
						srv.Stall(time.Hour)
						defer srv.Unstall()
					}
					err := <-done
					took := time.Since(began)
					if !stopped {
						assert.NoError(t, err)
						assert.Equal(t, timeout, took)
						return
					}
					assert.Equal(t, timeout+40*time.Millisecond, took, "the wait, then a ping of 40 ms: within the 50 ms allowed")
					require.ErrorIs(t, err, pool.ErrNoReply)
					assert.Contains(t, err.Error(), srv.Addr())
					assert.Contains(t, err.Error(), strconv.Quote(k), "names the key")
					assert.NotErrorIs(t, err, context.DeadlineExceeded, "the caller set no deadline")
				})
			})
		}
	}
}
