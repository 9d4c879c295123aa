package wire

import (
	"strconv"
	"unicode"
	"unicode/utf8"
)

// MaxSeconds is the largest timeout, lease or limit this package encodes or
// accepts. Larger values overflow the server's time arithmetic.
const MaxSeconds = 1<<31 - 1

// Request is one request of any command. Fields a command does not use are
// ignored when encoding and zero after parsing.
type Request struct {
	// Cmd is the command; it decides which of the other fields are sent.
	Cmd Command
	// Key names the lock or semaphore. Ignored for CmdStats and CmdAuth,
	// which send "_".
	Key string
	// Token identifies the holder, for release and renew.
	Token string
	// Secret is the shared secret of CmdAuth.
	Secret string
	// Timeout is how long the server may block, in whole seconds, for lock
	// and wait commands. Zero makes a lock a try-lock.
	Timeout int
	// Lease is the lease to ask for, in whole seconds, for lock, renew and
	// enqueue commands. Zero leaves it out: the server then uses its default
	// (also on renew, which resets a custom lease to the default).
	Lease int
	// Limit is the semaphore's number of slots, for CmdSemLock and
	// CmdSemEnqueue.
	Limit int
}

// Append validates r and appends its three lines to dst. On error dst is
// returned unchanged and nothing must be sent.
func (r *Request) Append(dst []byte) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return dst, err
	}
	orig := len(dst)
	dst = append(dst, commandNames[r.Cmd]...)
	dst = append(dst, '\n')
	if r.Cmd == CmdStats || r.Cmd == CmdAuth {
		dst = append(dst, "_\n"...)
	} else {
		dst = append(dst, r.Key...)
		dst = append(dst, '\n')
	}
	start := len(dst)
	switch r.Cmd {
	case CmdLock:
		dst = strconv.AppendInt(dst, int64(r.Timeout), 10)
		dst = appendLease(dst, r.Lease, true)
	case CmdSemLock:
		dst = strconv.AppendInt(dst, int64(r.Timeout), 10)
		dst = append(dst, ' ')
		dst = strconv.AppendInt(dst, int64(r.Limit), 10)
		dst = appendLease(dst, r.Lease, true)
	case CmdRelease, CmdSemRelease:
		dst = append(dst, r.Token...)
	case CmdRenew, CmdSemRenew:
		dst = append(dst, r.Token...)
		dst = appendLease(dst, r.Lease, true)
	case CmdEnqueue:
		dst = appendLease(dst, r.Lease, false)
	case CmdSemEnqueue:
		dst = strconv.AppendInt(dst, int64(r.Limit), 10)
		dst = appendLease(dst, r.Lease, true)
	case CmdWait, CmdSemWait:
		dst = strconv.AppendInt(dst, int64(r.Timeout), 10)
	case CmdAuth:
		dst = append(dst, r.Secret...)
	}
	if n := len(dst) - start; n > MaxLineLen {
		// Only a long token or secret can get here; Validate bounds both, so
		// this guards the sum of a token and a lease.
		err := invalid(r.Cmd, "argument", string(dst[start:]), "line is "+strconv.Itoa(n)+" bytes, over the limit of "+strconv.Itoa(MaxLineLen))
		err.TooLong = true
		return dst[:orig], err
	}
	return append(dst, '\n'), nil
}

func appendLease(dst []byte, lease int, space bool) []byte {
	if lease == 0 {
		return dst
	}
	if space {
		dst = append(dst, ' ')
	}
	return strconv.AppendInt(dst, int64(lease), 10)
}

// Validate checks r against the rules of its command without encoding it.
func (r *Request) Validate() error {
	if r.Cmd == 0 || r.Cmd >= numCommands {
		return invalid(0, "command", r.Cmd.String(), "unknown command")
	}
	switch r.Cmd {
	case CmdStats:
		return nil
	case CmdAuth:
		return firstError(checkSecret(r.Secret))
	}
	if err := checkKey(r.Cmd, r.Key); err != nil {
		return err
	}
	switch r.Cmd {
	case CmdLock, CmdWait, CmdSemWait:
		return firstError(checkTimeout(r.Cmd, r.Timeout), checkLease(r.Cmd, r.Lease))
	case CmdSemLock:
		return firstError(checkTimeout(r.Cmd, r.Timeout), checkLimit(r.Cmd, r.Limit), checkLease(r.Cmd, r.Lease))
	case CmdRelease, CmdSemRelease:
		return firstError(checkToken(r.Cmd, r.Token))
	case CmdRenew, CmdSemRenew:
		return firstError(checkToken(r.Cmd, r.Token), checkLease(r.Cmd, r.Lease))
	case CmdEnqueue:
		return firstError(checkLease(r.Cmd, r.Lease))
	case CmdSemEnqueue:
		return firstError(checkLimit(r.Cmd, r.Limit), checkLease(r.Cmd, r.Lease))
	}
	return nil
}

func firstError(errs ...*RequestError) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// CheckKey reports whether key may be sent as a key: non-empty, at most
// MaxLineLen bytes, no space, tab, '\r' or '\n'.
func CheckKey(key string) error {
	if err := checkKey(0, key); err != nil {
		return err
	}
	return nil
}

func checkKey(cmd Command, key string) *RequestError {
	if key == "" {
		return invalid(cmd, "key", key, "must not be empty")
	}
	if len(key) > MaxLineLen {
		err := invalid(cmd, "key", key, "is "+strconv.Itoa(len(key))+" bytes, over the limit of "+strconv.Itoa(MaxLineLen))
		err.TooLong = true
		return err
	}
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case ' ':
			return invalid(cmd, "key", key, "must not contain a space")
		case '\t':
			return invalid(cmd, "key", key, "must not contain a tab")
		case '\r', '\n':
			return invalid(cmd, "key", key, "must not contain a line break")
		}
	}
	return nil
}

// Tokens the server issues are 32 hex digits; we accept any printable ASCII
// without spaces so that a token survives the server's whitespace splitting
// and can never break the framing.
func checkToken(cmd Command, token string) *RequestError {
	if token == "" {
		return invalid(cmd, "token", token, "must not be empty")
	}
	if len(token) > MaxLineLen {
		err := invalid(cmd, "token", token, "is "+strconv.Itoa(len(token))+" bytes, over the limit of "+strconv.Itoa(MaxLineLen))
		err.TooLong = true
		return err
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return invalid(cmd, "token", token, "must be printable ASCII without spaces")
		}
	}
	return nil
}

// The server trims the secret, so surrounding whitespace could never match;
// control characters could break the framing.
func checkSecret(secret string) *RequestError {
	if secret == "" {
		return invalid(CmdAuth, "secret", "", "must not be empty")
	}
	if len(secret) > MaxLineLen {
		err := invalid(CmdAuth, "secret", "(hidden)", "is "+strconv.Itoa(len(secret))+" bytes, over the limit of "+strconv.Itoa(MaxLineLen))
		err.TooLong = true
		return err
	}
	first, _ := utf8.DecodeRuneInString(secret)
	last, _ := utf8.DecodeLastRuneInString(secret)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return invalid(CmdAuth, "secret", "(hidden)", "must not start or end with whitespace")
	}
	for i := 0; i < len(secret); i++ {
		if c := secret[i]; c < ' ' || c == 0x7f {
			return invalid(CmdAuth, "secret", "(hidden)", "must not contain control characters")
		}
	}
	return nil
}

func checkTimeout(cmd Command, timeout int) *RequestError {
	if timeout < 0 {
		return invalid(cmd, "timeout", strconv.Itoa(timeout), "must not be negative")
	}
	if timeout > MaxSeconds {
		return invalid(cmd, "timeout", strconv.Itoa(timeout), "must be at most "+strconv.Itoa(MaxSeconds)+" seconds")
	}
	return nil
}

func checkLease(cmd Command, lease int) *RequestError {
	if lease < 0 {
		return invalid(cmd, "lease", strconv.Itoa(lease), "must be positive (or 0 for the server's default)")
	}
	if lease > MaxSeconds {
		return invalid(cmd, "lease", strconv.Itoa(lease), "must be at most "+strconv.Itoa(MaxSeconds)+" seconds")
	}
	return nil
}

func checkLimit(cmd Command, limit int) *RequestError {
	if limit <= 0 {
		return invalid(cmd, "limit", strconv.Itoa(limit), "must be positive")
	}
	if limit > MaxSeconds {
		return invalid(cmd, "limit", strconv.Itoa(limit), "must be at most "+strconv.Itoa(MaxSeconds))
	}
	return nil
}

// ParseRequest parses the three lines of a request (without their '\n'), as
// a server does, by the grammar clients write: arguments are split on runs
// of white space (see [Fields]) and numbers may carry a sign or leading
// zeros. A *RequestError means the server answers "error" and keeps the
// connection.
//
// It is stricter than dflockd 1.10, so that every request it returns
// encodes again with [Request.Append]: it refuses numbers over
// [MaxSeconds] (dflockd takes any int64 and lets the duration wrap) and
// tokens or secrets with spaces or control characters (which dflockd never
// issues). The fakeserver, which must answer as dflockd does, parses with
// dflockd's own rules.
func ParseRequest(cmdLine, keyLine, arg []byte) (Request, error) {
	cmd, ok := ParseCommand(cmdLine)
	if !ok {
		return Request{}, invalid(0, "command", string(cmdLine), "unknown command")
	}
	switch cmd {
	case CmdStats:
		return Request{Cmd: cmd}, nil
	case CmdAuth:
		secret := string(trimSpace(arg))
		if err := checkSecret(secret); err != nil {
			return Request{}, err
		}
		return Request{Cmd: cmd, Secret: secret}, nil
	}
	r := Request{Cmd: cmd}
	if err := checkKey(cmd, string(keyLine)); err != nil {
		return Request{}, err
	}
	f, n := Fields(arg)
	var err *RequestError
	switch cmd {
	case CmdLock:
		if n != 1 && n != 2 {
			return Request{}, argCount(cmd, arg, "TIMEOUT [LEASE]")
		}
		r.Timeout, err = parseTimeout(cmd, f[0])
		if err == nil && n == 2 {
			r.Lease, err = parseLease(cmd, f[1])
		}
	case CmdSemLock:
		if n != 2 && n != 3 {
			return Request{}, argCount(cmd, arg, "TIMEOUT LIMIT [LEASE]")
		}
		r.Timeout, err = parseTimeout(cmd, f[0])
		if err == nil {
			r.Limit, err = parseLimit(cmd, f[1])
		}
		if err == nil && n == 3 {
			r.Lease, err = parseLease(cmd, f[2])
		}
	case CmdRelease, CmdSemRelease:
		r.Token = string(trimSpace(arg))
		err = checkToken(cmd, r.Token)
	case CmdRenew, CmdSemRenew:
		if n != 1 && n != 2 {
			return Request{}, argCount(cmd, arg, "TOKEN [LEASE]")
		}
		r.Token = string(f[0])
		err = checkToken(cmd, r.Token)
		if err == nil && n == 2 {
			r.Lease, err = parseLease(cmd, f[1])
		}
	case CmdEnqueue:
		// The whole trimmed argument is the lease: "5 6" is not a number.
		if a := trimSpace(arg); len(a) > 0 {
			r.Lease, err = parseLease(cmd, a)
		}
	case CmdSemEnqueue:
		if n != 1 && n != 2 {
			return Request{}, argCount(cmd, arg, "LIMIT [LEASE]")
		}
		r.Limit, err = parseLimit(cmd, f[0])
		if err == nil && n == 2 {
			r.Lease, err = parseLease(cmd, f[1])
		}
	case CmdWait, CmdSemWait:
		a := trimSpace(arg)
		if len(a) == 0 {
			return Request{}, argCount(cmd, arg, "TIMEOUT")
		}
		r.Timeout, err = parseTimeout(cmd, a)
	}
	if err != nil {
		return Request{}, err
	}
	r.Key = string(keyLine)
	return r, nil
}

func argCount(cmd Command, arg []byte, want string) *RequestError {
	return invalid(cmd, "argument", string(arg), "want "+want)
}

// parseNumber accepts what strconv.Atoi accepts, as the real server does.
func parseNumber(cmd Command, field string, b []byte) (int, *RequestError) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, invalid(cmd, field, string(b), "not an integer")
	}
	if n > MaxSeconds || n < -MaxSeconds {
		return 0, invalid(cmd, field, string(b), "out of range")
	}
	return int(n), nil
}

func parseTimeout(cmd Command, b []byte) (int, *RequestError) {
	n, err := parseNumber(cmd, "timeout", b)
	if err == nil {
		err = checkTimeout(cmd, n)
	}
	return n, err
}

func parseLease(cmd Command, b []byte) (int, *RequestError) {
	n, err := parseNumber(cmd, "lease", b)
	if err == nil && n <= 0 {
		err = invalid(cmd, "lease", string(b), "must be positive")
	}
	return n, err
}

func parseLimit(cmd Command, b []byte) (int, *RequestError) {
	n, err := parseNumber(cmd, "limit", b)
	if err == nil {
		err = checkLimit(cmd, n)
	}
	return n, err
}

// Fields splits a request's argument line as dflockd does, at runs of
// Unicode white space like strings.Fields, without allocating. It returns
// the first four fields and how many there are in all.
func Fields(b []byte) (f [4][]byte, n int) {
	start := -1
	for i := 0; i < len(b); {
		r, size := rune(b[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(b[i:])
		}
		if unicode.IsSpace(r) {
			if start >= 0 {
				if n < len(f) {
					f[n] = b[start:i]
				}
				n++
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i += size
	}
	if start >= 0 {
		if n < len(f) {
			f[n] = b[start:]
		}
		n++
	}
	return f, n
}

// trimSpace trims Unicode white space like strings.TrimSpace.
func trimSpace(b []byte) []byte {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if !unicode.IsSpace(r) {
			break
		}
		b = b[size:]
	}
	for len(b) > 0 {
		r, size := utf8.DecodeLastRune(b)
		if !unicode.IsSpace(r) {
			break
		}
		b = b[:len(b)-size]
	}
	return b
}
