package wire

import (
	"errors"
	"strconv"
)

// Limits of the protocol.
const (
	// MaxLineLen is the longest request line the server accepts, in bytes,
	// not counting the '\n' (a trailing '\r' counts).
	MaxLineLen = 256

	// MaxResponseLen is the longest response line a client accepts, but
	// for stats; anything longer is refused and the connection must be
	// discarded.
	MaxResponseLen = 64 << 10

	// MaxStatsLen is the longest stats reply a client accepts. The
	// server's has no bound: it lists every key the server tracks. This
	// cap only keeps a peer that is not a dflockd server from exhausting
	// memory.
	MaxStatsLen = 1 << 30
)

// ReplyLimit is the longest reply to cmd a client should accept.
func ReplyLimit(cmd Command) int {
	if cmd == CmdStats {
		return MaxStatsLen
	}
	return MaxResponseLen
}

// Sentinel errors for every status a server can answer besides success, and
// for the ways a frame can be wrong. Check them with [errors.Is].
var (
	// ErrTimeout: the server answered "timeout" (not granted in time, or a
	// try-lock found the key taken).
	ErrTimeout = errors.New("dflockd: not granted before the timeout")
	// ErrServer: the server answered plain "error" (unknown key or token,
	// expired lease, or a request it found malformed).
	ErrServer = errors.New("dflockd: refused")
	// ErrAuth: the server answered "error_auth" and closes the connection.
	ErrAuth = errors.New("dflockd: the server requires an auth token, and none was sent or it did not match")
	// ErrMaxLocks: the server tracks as many keys as it may.
	ErrMaxLocks = errors.New("dflockd: the server tracks as many keys as its --max-locks allows")
	// ErrMaxWaiters: the key's queue is full.
	ErrMaxWaiters = errors.New("dflockd: the key's queue is full (the server's --max-waiters)")
	// ErrLimitMismatch: the key exists with another semaphore limit.
	ErrLimitMismatch = errors.New("dflockd: the key is in use with another limit (a lock counts as limit 1, and an idle key keeps its limit for the server's --gc-max-idle)")
	// ErrAlreadyEnqueued: this connection already enqueued for the key.
	ErrAlreadyEnqueued = errors.New("dflockd: already enqueued for the key on this connection")
	// ErrNotEnqueued: wait without a prior enqueue on this connection.
	ErrNotEnqueued = errors.New("dflockd: nothing enqueued for the key on this connection")
	// ErrLeaseExpired: the grant of an enqueue expired before the wait.
	ErrLeaseExpired = errors.New("dflockd: the lease granted at enqueue ran out before the wait")

	// ErrMalformedReply: a reply that is not valid for the request it
	// answers. The connection is out of step and must be discarded.
	ErrMalformedReply = errors.New("wire: malformed reply")
	// ErrInvalidRequest: a request that breaks a rule of the protocol. It
	// was not sent.
	ErrInvalidRequest = errors.New("wire: invalid request")
	// ErrLineTooLong: a line over the size limit, either one we were about
	// to send or one we received.
	ErrLineTooLong = errors.New("wire: line too long")
)

// ServerError is a well-formed reply that reports failure. It keeps the
// server's raw reply and unwraps to the sentinel for its status.
type ServerError struct {
	// Cmd is the command of the request the reply answers.
	Cmd Command
	// Status is the failure the server answered; it names the sentinel
	// the error unwraps to.
	Status Status
}

// Error says what the refusal means, then the raw reply and the request
// it answers.
func (e *ServerError) Error() string {
	what := "dflockd: status " + e.Status.String()
	if err := e.Status.sentinel(); err != nil {
		what = err.Error()
	}
	if e.Status == StatusError {
		switch e.Cmd {
		case CmdRelease, CmdRenew, CmdSemRelease, CmdSemRenew:
			what = "dflockd: the server does not hold this token (its lease ran out, or it was released)"
		default:
			what = "dflockd: the server refused the request"
		}
	}
	return what + " (reply " + strconv.Quote(e.Status.String()) + " to " + e.Cmd.String() + ")"
}

// Reply is the raw reply line as the server sent it.
func (e *ServerError) Reply() string { return e.Status.String() }

// Unwrap returns the sentinel for the status, such as [ErrMaxLocks].
func (e *ServerError) Unwrap() error { return e.Status.sentinel() }

// ReplyError is a reply that does not fit the request it answers.
type ReplyError struct {
	Cmd    Command // the request it answers
	Reply  string  // the reply, cut to 128 bytes
	Reason string  // what is wrong with it
}

// Error names the reply and what is wrong with it.
func (e *ReplyError) Error() string {
	return "wire: malformed reply to " + e.Cmd.String() + ": " + strconv.Quote(e.Reply) + ": " + e.Reason
}

// Unwrap returns [ErrMalformedReply].
func (e *ReplyError) Unwrap() error { return ErrMalformedReply }

func malformed(cmd Command, line []byte, reason string) *ReplyError {
	const keep = 128
	if len(line) > keep {
		line = line[:keep]
	}
	return &ReplyError{Cmd: cmd, Reply: string(line), Reason: reason}
}

// RequestError is a request that breaks a rule of the protocol: built by a
// client (and then never sent) or received by a server (which answers
// "error").
type RequestError struct {
	Cmd   Command // zero when the command itself is unknown
	Field string  // "command", "key", "token", "timeout", "lease", "limit", "secret", "argument"
	Value string  // the offending value, cut to 64 bytes
	Rule  string  // the rule it breaks
	// TooLong marks a line over MaxLineLen; the error then also matches
	// ErrLineTooLong.
	TooLong bool
}

// Error says which field broke which rule with which value.
func (e *RequestError) Error() string {
	s := "wire: invalid " + e.Field
	if e.Cmd != 0 {
		s = "wire: " + e.Cmd.String() + ": invalid " + e.Field
	}
	return s + " " + strconv.Quote(e.Value) + ": " + e.Rule
}

// Unwrap returns [ErrInvalidRequest], and [ErrLineTooLong] for a line over
// the limit.
func (e *RequestError) Unwrap() []error {
	if e.TooLong {
		return []error{ErrInvalidRequest, ErrLineTooLong}
	}
	return []error{ErrInvalidRequest}
}

func invalid(cmd Command, field, value, rule string) *RequestError {
	const keep = 64
	if len(value) > keep {
		value = value[:keep] + "..."
	}
	return &RequestError{Cmd: cmd, Field: field, Value: value, Rule: rule}
}
