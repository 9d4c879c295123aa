package wire

// Status is the first word of a reply.
type Status uint8

// The statuses a server answers. The zero Status is invalid.
const (
	StatusOK                   Status = iota + 1 // "ok"
	StatusAcquired                               // "acquired" (enqueue granted at once)
	StatusQueued                                 // "queued" (enqueue must be followed by wait)
	StatusTimeout                                // "timeout"
	StatusError                                  // "error"
	StatusErrorAuth                              // "error_auth"
	StatusErrorMaxLocks                          // "error_max_locks"
	StatusErrorMaxWaiters                        // "error_max_waiters"
	StatusErrorLimitMismatch                     // "error_limit_mismatch"
	StatusErrorAlreadyEnqueued                   // "error_already_enqueued"
	StatusErrorNotEnqueued                       // "error_not_enqueued"
	StatusErrorLeaseExpired                      // "error_lease_expired"
	numStatuses
)

var statusNames = [numStatuses]string{
	StatusOK:                   "ok",
	StatusAcquired:             "acquired",
	StatusQueued:               "queued",
	StatusTimeout:              "timeout",
	StatusError:                "error",
	StatusErrorAuth:            "error_auth",
	StatusErrorMaxLocks:        "error_max_locks",
	StatusErrorMaxWaiters:      "error_max_waiters",
	StatusErrorLimitMismatch:   "error_limit_mismatch",
	StatusErrorAlreadyEnqueued: "error_already_enqueued",
	StatusErrorNotEnqueued:     "error_not_enqueued",
	StatusErrorLeaseExpired:    "error_lease_expired",
}

var statusErrors = [numStatuses]error{
	StatusTimeout:              ErrTimeout,
	StatusError:                ErrServer,
	StatusErrorAuth:            ErrAuth,
	StatusErrorMaxLocks:        ErrMaxLocks,
	StatusErrorMaxWaiters:      ErrMaxWaiters,
	StatusErrorLimitMismatch:   ErrLimitMismatch,
	StatusErrorAlreadyEnqueued: ErrAlreadyEnqueued,
	StatusErrorNotEnqueued:     ErrNotEnqueued,
	StatusErrorLeaseExpired:    ErrLeaseExpired,
}

// String returns the status as it appears on the wire.
func (s Status) String() string {
	if s == 0 || s >= numStatuses {
		return "status(?)"
	}
	return statusNames[s]
}

// Success reports whether the status means the request did what it asked:
// ok, acquired or queued.
func (s Status) Success() bool {
	return s == StatusOK || s == StatusAcquired || s == StatusQueued
}

func (s Status) sentinel() error {
	if s >= numStatuses {
		return nil
	}
	return statusErrors[s]
}

func parseStatus(b []byte) (Status, bool) {
	for s := StatusOK; s < numStatuses; s++ {
		if string(b) == statusNames[s] {
			return s, true
		}
	}
	return 0, false
}

// failures lists, per command, the non-success statuses a server may send.
// error_auth may answer any first request on a server with a token.
var failures = [numCommands][]Status{
	CmdLock:       {StatusTimeout, StatusError, StatusErrorAuth, StatusErrorMaxLocks, StatusErrorMaxWaiters, StatusErrorLimitMismatch},
	CmdRelease:    {StatusError, StatusErrorAuth},
	CmdRenew:      {StatusError, StatusErrorAuth},
	CmdEnqueue:    {StatusError, StatusErrorAuth, StatusErrorMaxLocks, StatusErrorMaxWaiters, StatusErrorLimitMismatch, StatusErrorAlreadyEnqueued},
	CmdWait:       {StatusTimeout, StatusError, StatusErrorAuth, StatusErrorNotEnqueued, StatusErrorLeaseExpired},
	CmdSemLock:    {StatusTimeout, StatusError, StatusErrorAuth, StatusErrorMaxLocks, StatusErrorMaxWaiters, StatusErrorLimitMismatch},
	CmdSemRelease: {StatusError, StatusErrorAuth},
	CmdSemRenew:   {StatusError, StatusErrorAuth},
	CmdSemEnqueue: {StatusError, StatusErrorAuth, StatusErrorMaxLocks, StatusErrorMaxWaiters, StatusErrorLimitMismatch, StatusErrorAlreadyEnqueued},
	CmdSemWait:    {StatusTimeout, StatusError, StatusErrorAuth, StatusErrorNotEnqueued, StatusErrorLeaseExpired},
	CmdStats:      {StatusError, StatusErrorAuth},
	CmdAuth:       {StatusError, StatusErrorAuth},
}
