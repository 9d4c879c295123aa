package fakeserver

import (
	"bytes"
	"strconv"
	"time"

	"github.com/dflock-go/dflock/wire"
)

// request is one parsed request, in the real server's terms: durations
// computed as it computes them, the default lease already filled in.
//
// The fake parses requests itself rather than with wire.ParseRequest: the
// wire grammar bounds numbers to what a client ever sends (at most
// wire.MaxSeconds), while the real server takes any int64 and multiplies
// it by a second in time.Duration, wrapping around. A lease of 3e9 s is
// granted there, a lease of 18446744074 s becomes 0.29 s (answered with
// the default lease, as a grant of "0" seconds is), and a timeout of
// 9223372037 s turns negative and does not wait at all. A fake that
// answered "error" instead would hide what a client meets in production.
type request struct {
	cmd     wire.Command
	key     string
	token   string        // r, n, sr, sn; the secret for auth
	timeout time.Duration // l, sl, w, sw; may be negative after wrapping
	lease   time.Duration // l, n, e, sl, sn, se; may be negative for e
	limit   int           // sl, se
}

// errBadRequest is a request the real server answers with "error" while
// keeping the connection: all three lines were read.
type errBadRequest struct{ why string }

func (e *errBadRequest) Error() string { return "fakeserver: bad request: " + e.why }

func bad(why string) error { return &errBadRequest{why} }

// parseRequest parses the three lines of a request (trailing '\r's already
// stripped) with the real server's rules and in its order: the command
// first, then (but for stats and auth) the key, then the argument.
func parseRequest(cmdLine, keyLine, arg []byte, defLease time.Duration) (request, error) {
	cmd, ok := wire.ParseCommand(cmdLine)
	if !ok {
		return request{}, bad("unknown command")
	}
	switch cmd {
	case wire.CmdStats:
		return request{cmd: cmd}, nil
	case wire.CmdAuth:
		return request{cmd: cmd, token: string(bytes.TrimSpace(arg))}, nil
	}
	if err := checkKey(keyLine); err != nil {
		return request{}, err
	}
	r := request{cmd: cmd, lease: defLease}
	f, n := wire.Fields(arg)
	var err error
	switch cmd {
	case wire.CmdLock:
		if n != 1 && n != 2 {
			return request{}, bad("want TIMEOUT [LEASE]")
		}
		if r.timeout, err = timeoutArg(f[0]); err == nil && n == 2 {
			r.lease, err = seconds(f[1])
		}
		if err == nil && r.lease <= 0 {
			err = bad("lease must be positive")
		}
	case wire.CmdSemLock:
		if n != 2 && n != 3 {
			return request{}, bad("want TIMEOUT LIMIT [LEASE]")
		}
		r.timeout, err = timeoutArg(f[0])
		if err == nil {
			r.limit, err = limitArg(f[1])
		}
		if err == nil && n == 3 {
			r.lease, err = seconds(f[2])
		}
		if err == nil && r.lease <= 0 {
			err = bad("lease must be positive")
		}
	case wire.CmdRelease, wire.CmdSemRelease:
		// The whole trimmed argument is the token, spaces and all: it
		// then matches no holder.
		if r.token = string(bytes.TrimSpace(arg)); r.token == "" {
			err = bad("empty token")
		}
	case wire.CmdRenew, wire.CmdSemRenew:
		if n != 1 && n != 2 {
			return request{}, bad("want TOKEN [LEASE]")
		}
		r.token = string(f[0])
		if n == 2 {
			r.lease, err = seconds(f[1])
		}
		if err == nil && r.lease <= 0 {
			err = bad("lease must be positive")
		}
	case wire.CmdEnqueue:
		// The whole trimmed argument is the lease ("5 6" is no number),
		// checked before it becomes a duration: one that wraps around to
		// a negative duration is accepted, and expires at once.
		if a := bytes.TrimSpace(arg); len(a) > 0 {
			lt, aerr := strconv.Atoi(string(a))
			switch {
			case aerr != nil:
				err = bad("not an integer")
			case lt <= 0:
				err = bad("lease must be positive")
			}
			r.lease = time.Duration(lt) * time.Second
		}
	case wire.CmdSemEnqueue:
		if n != 1 && n != 2 {
			return request{}, bad("want LIMIT [LEASE]")
		}
		if r.limit, err = limitArg(f[0]); err == nil && n == 2 {
			r.lease, err = seconds(f[1])
		}
		if err == nil && r.lease <= 0 {
			err = bad("lease must be positive")
		}
	case wire.CmdWait, wire.CmdSemWait:
		a := bytes.TrimSpace(arg)
		if len(a) == 0 {
			return request{}, bad("want TIMEOUT")
		}
		r.timeout, err = timeoutArg(a)
	}
	if err != nil {
		return request{}, err
	}
	r.key = string(keyLine)
	return r, nil
}

// checkKey refuses what the real server refuses: an empty key, or one with
// a space, tab or '\r' ('\n' cannot occur in a line). Other white space,
// control bytes and invalid UTF-8 are accepted.
func checkKey(key []byte) error {
	if len(key) == 0 {
		return bad("empty key")
	}
	if bytes.ContainsAny(key, " \t\r") {
		return bad("key contains white space")
	}
	return nil
}

// seconds parses a count of seconds as strconv.Atoi does (sign and
// leading zeros allowed, any int64) and converts it as the real server
// does, wrapping around on overflow.
func seconds(b []byte) (time.Duration, error) {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return 0, bad("not an integer")
	}
	return time.Duration(n) * time.Second, nil
}

// timeoutArg is a timeout: not negative as written (it may still wrap to a
// negative duration, which then does not wait at all).
func timeoutArg(b []byte) (time.Duration, error) {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return 0, bad("not an integer")
	}
	if n < 0 {
		return 0, bad("negative timeout")
	}
	return time.Duration(n) * time.Second, nil
}

func limitArg(b []byte) (int, error) {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return 0, bad("not an integer")
	}
	if n <= 0 {
		return 0, bad("limit must be positive")
	}
	return n, nil
}

// leaseSeconds is the lease a grant reply shows: whole seconds, and the
// server's default where that rounds to zero (the real server formats a
// grant of "0 seconds" as its default lease).
func (s *Server) leaseSeconds(secs int) int {
	if secs == 0 {
		return int(s.cfg.DefaultLeaseTTL / time.Second)
	}
	return secs
}
