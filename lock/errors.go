package lock

import (
	"errors"
	"fmt"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// Errors. Server statuses are the wire sentinels, re-exported here so one
// import is enough; all of them work with errors.Is.
var (
	// ErrTimeout: WithLock, Lock.With or LockAll (see SetTimeoutError) did
	// not acquire within the acquire timeout
	// (Acquire and Wait report that as false with a nil error). A
	// cancelled or expired context is reported as the context's error
	// instead.
	ErrTimeout = wire.ErrTimeout
	// ErrLockLost: a held lock was lost: its renewal was refused, its lease
	// ran out before a renewal was confirmed, or the connection that held
	// it broke. It is the cause of the context WithLock hands out.
	ErrLockLost = errors.New("lock: lost")
	// ErrNotHeld: Release of a lock that is not held.
	ErrNotHeld = errors.New("lock: not held")
	// ErrHeld: Acquire or Enqueue of a lock this handle already holds.
	ErrHeld = errors.New("lock: already held")
	// ErrClosed: the client, or the handle, was closed.
	ErrClosed = errors.New("lock: closed")
	// ErrInvalid: a key, option or argument that the protocol does not
	// allow, refused before anything was sent.
	ErrInvalid = wire.ErrInvalidRequest

	ErrMaxLocks        = wire.ErrMaxLocks        // the server tracks as many keys as it may
	ErrMaxWaiters      = wire.ErrMaxWaiters      // the key's queue is full
	ErrLimitMismatch   = wire.ErrLimitMismatch   // the key exists with another limit
	ErrNotEnqueued     = wire.ErrNotEnqueued     // Wait without a pending Enqueue
	ErrAlreadyEnqueued = wire.ErrAlreadyEnqueued // Enqueue while one is pending
	ErrServer          = wire.ErrServer          // the server answered "error"
	ErrAuth            = wire.ErrAuth            // the server refused the auth token

	// ErrRefused: the server closed a new connection before answering,
	// as dflockd does over its --max-connections. New connections to it
	// then back off for a while (up to 2 s), failing at once meanwhile.
	ErrRefused = pool.ErrRefused
)

// invalidError is a setting or argument refused before anything was
// sent: it matches ErrInvalid and says what was wrong in lock's words.
type invalidError string

func (e invalidError) Error() string { return "lock: " + string(e) }
func (e invalidError) Unwrap() error { return ErrInvalid }

// invalid builds an invalidError.
func invalid(format string, args ...any) error {
	return invalidError(fmt.Sprintf(format, args...))
}
