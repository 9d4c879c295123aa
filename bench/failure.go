package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// WorkloadError is a workload that failed as a whole; Run stops at it.
// A workload fails when, in its measured phase, more of its operations
// failed than succeeded, or none succeeded; or at once when one meets an
// error that no retry fixes (the server refused authentication).
// Hold-many, which runs until it has tried all its locks rather than for
// a duration, stops as soon as at least 32 of its acquires failed
// (holdManyMinFailures) and they outnumber those that succeeded.
//
// It unwraps to one of the operations' errors, so that errors.Is finds
// the cause: lock.ErrAuth if any operation met it (the connections a
// refused authentication breaks then fail too), otherwise an error of the
// commonest kind, such as one wrapping lock.ErrMaxLocks.
type WorkloadError struct {
	// Workload is the name of the workload that failed.
	Workload string
	// Succeeded and Failed count the operations of the measured phase,
	// and the failure that stopped the workload early, if one did.
	Succeeded, Failed int64
	// Errors counts the failures by kind, as Result.Errors does.
	Errors map[string]int64
	// Err is the error that decided, as above.
	Err error
}

// Error says which workload failed, how much of it, and with what.
func (e *WorkloadError) Error() string {
	s := "bench: " + e.Workload + " failed: "
	switch {
	case e.Succeeded+e.Failed == 0:
		s += "no operation completed"
	default:
		s += fmt.Sprintf("%d of %d operations failed (%s)", e.Failed, e.Succeeded+e.Failed, errorsText(e.Errors))
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns Err.
func (e *WorkloadError) Unwrap() error { return e.Err }

// holdManyMinFailures is how many failed acquires hold-many needs before
// it may give up early, so that a burst of failures at its start, before
// any acquire could succeed, does not decide.
const holdManyMinFailures = 32

// fatal reports whether err will come back on every retry, so that a
// workload meeting it should stop at once rather than hammer the server.
func fatal(err error) bool { return errors.Is(err, lock.ErrAuth) }

// tally is one worker's account of a workload: the latency of each
// operation that succeeded, and the failures by kind with the first
// error of each kind.
type tally struct {
	hist   *hdrhistogram.Histogram
	errs   map[string]int64
	sample map[string]error
}

func newTally() *tally {
	return &tally{hist: newHistogram(), errs: map[string]int64{}, sample: map[string]error{}}
}

func (t *tally) fail(err error) {
	k := kind(err)
	t.errs[k]++
	if t.sample[k] == nil {
		t.sample[k] = err
	}
}

// judge returns the WorkloadError of a workload whose tallies say it
// failed (see WorkloadError), or nil. stopped is the cause a worker gave
// for stopping the workload early, if any: a workload stopped early
// failed, whatever its counts came to after.
func judge(name string, tallies []*tally, stopped error) error {
	var succeeded, failed int64
	errs := map[string]int64{}
	samples := map[string]error{}
	for _, t := range tallies {
		succeeded += t.hist.TotalCount()
		for k, n := range t.errs {
			errs[k] += n
			failed += n
			if samples[k] == nil {
				samples[k] = t.sample[k]
			}
		}
	}
	if stopped == nil && succeeded > 0 && failed <= succeeded {
		return nil
	}
	e := &WorkloadError{Workload: name, Succeeded: succeeded, Failed: failed, Errors: errs}
	switch {
	case fatal(stopped):
		e.Err = stopped
	case samples["auth"] != nil:
		e.Err = samples["auth"]
	default:
		// The commonest kind; of equals, the first by name, so that the
		// same run reads the same.
		var most int64
		for _, k := range slices.Sorted(maps.Keys(errs)) {
			if errs[k] > most {
				most, e.Err = errs[k], samples[k]
			}
		}
	}
	return e
}

// Backoff after a failed operation: each worker waits minBackoff after
// its first failure in a row, twice as long after each further one up to
// maxBackoff, and not at all once an operation succeeds. A workload whose
// every operation fails thus costs the servers at most Workers /
// maxBackoff requests a second (1,000 for 64 workers) instead of as many
// as they can refuse, while a rare failure costs the figures almost
// nothing.
const (
	minBackoff = time.Millisecond
	maxBackoff = 64 * time.Millisecond
)

// backoff is one worker's wait between failed operations.
type backoff struct{ next time.Duration }

func (b *backoff) reset() { b.next = 0 }

// wait sleeps before the next attempt until ctx ends, or until deadline
// if that comes first (zero: none).
func (b *backoff) wait(ctx context.Context, deadline time.Time) {
	b.next = min(max(2*b.next, minBackoff), maxBackoff)
	d := b.next
	if !deadline.IsZero() {
		d = min(d, time.Until(deadline))
	}
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// kind names an error for the report.
func kind(err error) string {
	var op *net.OpError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, lock.ErrTimeout):
		return "timeout"
	case errors.Is(err, lock.ErrAuth):
		return "auth"
	case errors.Is(err, lock.ErrLockLost):
		return "lost"
	case errors.Is(err, lock.ErrMaxLocks):
		return "max_locks"
	case errors.Is(err, lock.ErrMaxWaiters):
		return "max_waiters"
	case errors.Is(err, lock.ErrLimitMismatch):
		return "limit_mismatch"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "context"
	case errors.As(err, &op) && op.Op == "dial":
		return "connect"
	case errors.Is(err, lock.ErrRefused):
		return "refused_conn"
	case errors.Is(err, pool.ErrBroken), errors.Is(err, errRawBroken):
		return "broken_conn"
	case errors.Is(err, lock.ErrServer):
		return "server_error"
	}
	return "other"
}
