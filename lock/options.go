package lock

import (
	"time"
)

// The defaults of the options, used where an option is not given.
const (
	DefaultAcquireTimeout = 10 * time.Second
	DefaultRenewRatio     = 0.5
)

// Option sets one setting of a Lock or Semaphore.
type Option func(*options)

type options struct {
	acquireTimeout time.Duration
	lease          time.Duration // 0: the server's default
	renewRatio     float64
	onLost         func(key string, err error)
}

func defaultOptions() options {
	return options{acquireTimeout: DefaultAcquireTimeout, renewRatio: DefaultRenewRatio}
}

// AcquireTimeout is how long Acquire (and WithLock) wait for the lock,
// and LockAll for its whole set. Zero makes Acquire a try-lock. Default
// DefaultAcquireTimeout (10 s). It goes to the server in whole seconds,
// rounded up; a context deadline that ends sooner wins.
func AcquireTimeout(d time.Duration) Option { return func(o *options) { o.acquireTimeout = d } }

// LeaseTTL is the lease to ask for, at least 1 s (the server counts in
// whole seconds; less is ErrInvalid), rounded up to whole seconds.
// Default: the server's (33 s unless configured otherwise). Renewals
// resend it.
func LeaseTTL(d time.Duration) Option { return func(o *options) { o.lease = d } }

// RenewRatio: a held lock is renewed when this fraction of its lease has
// passed. Default DefaultRenewRatio (0.5); between 0 and 1 exclusive.
func RenewRatio(r float64) Option { return func(o *options) { o.renewRatio = r } }

// OnLost runs f once, in its own goroutine, when a held lock is lost, with
// the key and the reason (matching ErrLockLost).
func OnLost(f func(key string, err error)) Option { return func(o *options) { o.onLost = f } }

func (o *options) check() error {
	switch {
	case o.acquireTimeout < 0:
		return invalid("AcquireTimeout %v must not be negative", o.acquireTimeout)
	case o.lease < 0:
		return invalid("LeaseTTL %v must not be negative", o.lease)
	case o.lease > 0 && o.lease < time.Second:
		// Rounded up, it would be twice or more what was asked for: a
		// surprise in the one setting that bounds how long a crashed
		// holder blocks the others.
		return invalid("LeaseTTL %v: the server counts leases in whole seconds; ask for at least 1s", o.lease)
	case !(o.renewRatio > 0 && o.renewRatio < 1):
		return invalid("RenewRatio %v must be between 0 and 1", o.renewRatio)
	}
	return nil
}

// seconds rounds d up to whole seconds: the protocol's unit.
func seconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
