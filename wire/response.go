package wire

import (
	"bytes"
	"strconv"
)

// Response is one reply line, typed by the request it answers.
type Response struct {
	// Cmd is the command of the request this reply answers; it decides the
	// shape of a success reply.
	Cmd Command
	// Status is what the server answered: success, or the failure that
	// Err reports.
	Status Status
	// Token is the holder's token of a grant (ok or acquired on lock,
	// enqueue and wait commands).
	Token string
	// Lease is in whole seconds: the lease of a grant, or the new lease
	// reported by a renew.
	Lease int
	// Body is the JSON document of a stats reply (see [ParseStats]).
	Body string
}

// Err returns nil for a success status (ok, acquired, queued) and otherwise
// a [*ServerError] that matches the status's sentinel, such as [ErrTimeout].
func (r *Response) Err() error {
	if r.Status.Success() {
		return nil
	}
	if r.Cmd < numCommands && r.Status < numStatuses {
		// Preallocated so that frequent failures (try-lock timeouts) cost
		// no allocation.
		return serverErrors[r.Cmd][r.Status]
	}
	return &ServerError{Cmd: r.Cmd, Status: r.Status}
}

var serverErrors = func() (t [numCommands][numStatuses]*ServerError) {
	for c := range t {
		for s := range t[c] {
			t[c][s] = &ServerError{Cmd: Command(c), Status: Status(s)}
		}
	}
	return t
}()

// Append appends the reply line, with its '\n', to dst. It is the server's
// encoder; it trusts r (a server builds it from its own state).
func (r *Response) Append(dst []byte) []byte {
	dst = append(dst, statusNames[r.Status]...)
	if r.Status == StatusOK || r.Status == StatusAcquired {
		switch {
		case r.Cmd.grants():
			dst = append(dst, ' ')
			dst = append(dst, r.Token...)
			dst = append(dst, ' ')
			dst = strconv.AppendInt(dst, int64(r.Lease), 10)
		case r.Cmd == CmdRenew || r.Cmd == CmdSemRenew:
			dst = append(dst, ' ')
			dst = strconv.AppendInt(dst, int64(r.Lease), 10)
		case r.Cmd == CmdStats:
			dst = append(dst, ' ')
			dst = append(dst, r.Body...)
		}
	}
	return append(dst, '\n')
}

// ParseResponse parses one reply line (without its '\n') as the answer to a
// request of command cmd. It allocates only the token (and a stats body).
//
// A reply that does not fit cmd, such as "ok" to a lock request, is a
// [*ReplyError]: the connection is out of step and must be discarded. A
// well-formed failure ("timeout", "error_max_locks") is not an error here;
// [Response.Err] turns it into one.
func ParseResponse(cmd Command, line []byte) (Response, error) {
	r := Response{Cmd: cmd}
	if cmd == 0 || cmd >= numCommands {
		return r, malformed(cmd, line, "unknown request command")
	}
	word, rest, hasRest := bytes.Cut(line, []byte{' '})
	st, ok := parseStatus(word)
	if !ok {
		return r, malformed(cmd, line, "unknown status")
	}
	r.Status = st
	if !st.Success() {
		if hasRest {
			return r, malformed(cmd, line, "unexpected text after the status")
		}
		for _, f := range failures[cmd] {
			if f == st {
				return r, nil
			}
		}
		return r, malformed(cmd, line, "status "+st.String()+" does not answer "+cmd.String())
	}

	switch {
	case cmd == CmdEnqueue || cmd == CmdSemEnqueue:
		if st == StatusQueued {
			if hasRest {
				return r, malformed(cmd, line, "unexpected text after queued")
			}
			return r, nil
		}
		if st != StatusAcquired {
			return r, malformed(cmd, line, "enqueue answers acquired or queued")
		}
		return parseGrant(r, line, rest, hasRest)
	case st != StatusOK:
		return r, malformed(cmd, line, st.String()+" does not answer "+cmd.String())
	case cmd.grants():
		return parseGrant(r, line, rest, hasRest)
	case cmd == CmdRenew || cmd == CmdSemRenew:
		if !hasRest {
			return r, malformed(cmd, line, "renew answers ok SECONDS")
		}
		n, ok := parseSeconds(rest)
		if !ok {
			return r, malformed(cmd, line, "lease is not a positive whole number of seconds")
		}
		r.Lease = n
		return r, nil
	case cmd == CmdStats:
		if !hasRest || len(rest) == 0 {
			return r, malformed(cmd, line, "stats answers ok JSON")
		}
		r.Body = string(rest)
		return r, nil
	default: // release, auth
		if hasRest {
			return r, malformed(cmd, line, "unexpected text after ok")
		}
		return r, nil
	}
}

func parseGrant(r Response, line, rest []byte, hasRest bool) (Response, error) {
	tok, lease, ok := bytes.Cut(rest, []byte{' '})
	if !hasRest || !ok {
		return r, malformed(r.Cmd, line, "a grant is "+r.Status.String()+" TOKEN LEASE")
	}
	if !validToken(tok) {
		return r, malformed(r.Cmd, line, "token is not printable ASCII")
	}
	n, ok := parseSeconds(lease)
	if !ok {
		return r, malformed(r.Cmd, line, "lease is not a positive whole number of seconds")
	}
	r.Token = string(tok)
	r.Lease = n
	return r, nil
}

func validToken(b []byte) bool {
	if len(b) == 0 || len(b) > MaxLineLen {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// parseSeconds accepts only what a server writes: decimal digits, no sign,
// no leading zero, positive, at most MaxSeconds.
func parseSeconds(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 10 || b[0] == '0' {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= MaxSeconds
}
