package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// render is err as dflock says it, in one voice under the command's
// prefix. The library's errors are written for a Go caller: each package
// prefixes what it wraps ("lock: lost: ... pool: grant lost: ... pool:
// connection broken: read: EOF") and some give advice in Go terms
// ("give the token in Config.Pool.AuthToken"), or advice that fits only
// some of the causes it is given for. render drops the prefixes, the
// advice (the command's hint gives what applies, in its flags' terms)
// and what a wrapper repeats of what it wraps, and names settings by
// their flags. Only the words change: errors.Is and errors.As still see
// the error itself, which is what the hints and exit codes go by.
func render(err error) string {
	msg := err.Error()
	for _, r := range rewrites {
		msg = r.re.ReplaceAllString(msg, r.with)
	}
	// A grant is lost inside a lock that is lost: one "lost" says it.
	if i := strings.Index(msg, "grant lost: "); i >= 0 && strings.Contains(msg[:i], "lost") {
		msg = msg[:i] + msg[i+len("grant lost: "):]
	}
	// A server already named ("lock "k" on ADDR: ...") is "the server"
	// after.
	for _, re := range []*regexp.Regexp{refusedBy, noReplyFrom, brokeTo} {
		if m := re.FindStringSubmatchIndex(msg); m != nil && strings.Contains(msg[:m[0]], msg[m[2]:m[3]]) {
			msg = msg[:m[2]] + "the server" + msg[m[3]:]
		}
	}
	msg = strings.Replace(msg, "connection to the server broke", "its connection broke", 1)
	return msg
}

// refusedBy, noReplyFrom and brokeTo find the server of a refused,
// unanswered or broken connection, in the pool's words.
var (
	refusedBy   = regexp.MustCompile(`(\S+) closed the connection before answering anything`)
	noReplyFrom = regexp.MustCompile(`no reply by the deadline from (\S+?)(?:: |[ )]|$)`)
	brokeTo     = regexp.MustCompile(`connection to (\S+) broke`)
)

// rewrites are render's rules, applied in order.
var rewrites = []struct {
	re   *regexp.Regexp
	with string
}{
	// The packages' prefixes, where a message or a wrapped one starts,
	// one or several in a row ("lock: pool: release of ...").
	{regexp.MustCompile(`(^|: |\(|; )(?:(?:lock|pool|wire|shard|bench|dflockd|fakeserver): )+`), "$1"},
	// Advice for a Go caller, or for only some of the causes; the hints
	// say what applies.
	{regexp.MustCompile(` \(give the token in Config\.Pool\.AuthToken\)`), ""},
	{regexp.MustCompile(`; it may be at its --max-connections limit(?:, or expect TLS)?`), ""},
	// The pool's dial backoff: how the library paces its retries, which
	// the user does not choose.
	{regexp.MustCompile(` \(failure \d+ in a row; no new connection for [^)]*\)`), ""},
	// A wrapper that says what it wraps says it once.
	{regexp.MustCompile(`broke: connection broken: `), "broke: "},
	// Settings by their flags.
	{regexp.MustCompile(`(^|: )Replicas (\d)`), "$1--replicas $2"},
	{regexp.MustCompile(`(^|: )AcquireTimeout (-?\d)`), "$1--timeout $2"},
	{regexp.MustCompile(`(^|: )LeaseTTL (-?\d)`), "$1--lease $2"},
}

// hint says what the user can change about err, in the command's terms
// (its flags and DFLOCK_ variables, the server's flags), or "" when the
// cause is not clear: a hint that names a cause that did not happen
// sends the user the wrong way. cf is the connection flags of a command
// that talks to servers, nil otherwise. A refused or broken connection
// is not enough to tell why it went: hint looks at the server again
// (see probeServer), which takes up to a few seconds.
func hint(err error, cf *clientFlags) string {
	if r, ok := err.(retold); ok {
		// Several servers' errors: the first that has a hint.
		for _, e := range r.errs {
			if h := hint(e, cf); h != "" {
				return h
			}
		}
		return ""
	}
	if cf == nil {
		cf = &clientFlags{}
	}
	addr := serverOf(err)
	server := "the server"
	if addr != "" {
		server = addr
	}
	var (
		op         *net.OpError
		dns        *net.DNSError
		plain      tls.RecordHeaderError
		unknownCA  x509.UnknownAuthorityError
		otherName  x509.HostnameError
		unanswered = errors.Is(err, pool.ErrNoReply)
	)
	switch {
	case errors.Is(err, lock.ErrAuth) && cf.authTokenFile != "":
		return server + " refused the auth token: check the file --auth-token-file (or DFLOCK_AUTH_TOKEN_FILE) names"
	case errors.Is(err, lock.ErrAuth):
		return server + " needs an auth token: pass --auth-token-file FILE (or set DFLOCK_AUTH_TOKEN_FILE)"
	case errors.Is(err, pool.ErrServerTimedOut):
		return server + " timed out a quiet connection: if its --read-timeout is under " + pool.DefaultServerReadTimeout.String() +
			", pass it as --server-read-timeout (or DFLOCK_SERVER_READ_TIMEOUT)"
	case errors.Is(err, lock.ErrMaxLocks):
		return server + " refused new keys: raise its --max-locks"
	case errors.Is(err, lock.ErrMaxWaiters):
		return server + " refused waiters: raise its --max-waiters, or leave it at 0 (no limit)"
	case errors.As(err, &plain):
		return server + " does not speak TLS: leave out --tls-ca (and DFLOCK_TLS_CA) for it"
	case errors.As(err, &unknownCA):
		return server + "'s certificate is not signed by the CA in --tls-ca (DFLOCK_TLS_CA): give the CA that signed it"
	case errors.As(err, &otherName):
		return server + "'s certificate is not for " + otherName.Host + ": name the server in --servers as its certificate does"
	case errors.As(err, &dns):
		return "no host " + dns.Name + " is known here: check " + cf.serversSource()
	case errors.As(err, &op) && op.Op == "dial" && errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens at " + server + ": is the server running, and its address right in " + cf.serversSource() + "?"
	case errors.As(err, &op) && op.Op == "dial" && op.Timeout():
		return server + " did not take the connection in time: is it reachable from here?"
	case unanswered && addr != "":
		return "no answer from " + addr + " in time: is the server running, and not stopped or overloaded?"
	case errors.Is(err, lock.ErrRefused), errors.Is(err, pool.ErrBroken):
		if addr == "" {
			return ""
		}
		switch probeServer(addr, cf.tlsCA != "") {
		case serverGone:
			return "nothing listens at " + addr + " now: the server stopped or restarted; is it running?"
		case serverFull:
			if !errors.Is(err, lock.ErrRefused) {
				// A connection that worked and then broke was not turned
				// away: the server being full now is another story.
				return ""
			}
			return addr + " closes new connections as soon as it takes them: it is at its connection limit (raise its --max-connections, or run fewer clients)"
		case serverTLS:
			return addr + " speaks TLS: pass --tls-ca FILE (or set DFLOCK_TLS_CA) with the CA that signed its certificate"
		}
	}
	return ""
}

// serversSource names where the command took its servers from, for a
// hint to send the user there.
func (f *clientFlags) serversSource() string {
	if f.fleet != "" {
		return "the fleet file " + f.fleet
	}
	return "--servers (DFLOCK_SERVERS)"
}

// serverOf finds the server an error is about, in the words of the
// library's errors (the innermost mention first) or of a command that
// put the address before the error, or "".
func serverOf(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil {
		return op.Addr.String()
	}
	msg := err.Error()
	for _, re := range serverMentions {
		if m := re.FindStringSubmatch(msg); m != nil && pool.CheckAddr(m[1]) == nil {
			return m[1]
		}
	}
	return ""
}

// serverMentions are the ways the library's errors name a server, the
// most specific first. An address has no ": " in it, IPv6 ones included.
var serverMentions = []*regexp.Regexp{
	refusedBy,
	noReplyFrom,
	brokeTo,
	regexp.MustCompile(` on (\S+?): `),
	regexp.MustCompile(`^(\S+?): `),
}

// serverState is what a fresh connection to a server shows of it.
type serverState int

const (
	serverAnswers serverState = iota // it takes connections as usual, or the probe could not tell
	serverGone                       // nothing listens at its address
	serverFull                       // it closes new connections at once, as dflockd over --max-connections
	serverTLS                        // it speaks TLS, and dflock spoke plain TCP to it
)

// Bounds of probeServer: long enough for a loaded server on a local
// network, short enough for a command that is about to exit.
const (
	probeDialTimeout = time.Second
	probeCloseWait   = 300 * time.Millisecond
)

// probeServer connects to addr again to tell why a connection to it was
// closed: a server gone refuses the connection; one at its connection
// limit closes it at once, before anything is sent; a TLS server, which
// a plain client's request makes close the connection too, completes a
// TLS handshake. usedTLS says dflock spoke TLS to it already.
func probeServer(addr string, usedTLS bool) serverState {
	nc, err := net.DialTimeout("tcp", addr, probeDialTimeout)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return serverGone
		}
		return serverAnswers
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(probeCloseWait))
	_, err = nc.Read(make([]byte, 1))
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return serverFull
	case !errors.As(err, &ne) || !ne.Timeout() || usedTLS:
		return serverAnswers
	}
	// Quiet, as both a dflockd and a TLS server are until spoken to. A
	// handshake tells them apart; nothing is sent after it, and its
	// certificate is not checked, since only its speaking TLS matters.
	nc.SetDeadline(time.Now().Add(probeDialTimeout))
	tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	if tc.Handshake() == nil {
		return serverTLS
	}
	return serverAnswers
}
