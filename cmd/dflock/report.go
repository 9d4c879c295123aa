package main

import (
	"regexp"
	"strings"
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
	for _, re := range []*regexp.Regexp{refusedBy, brokeTo} {
		if m := re.FindStringSubmatchIndex(msg); m != nil && strings.Contains(msg[:m[0]], msg[m[2]:m[3]]) {
			msg = msg[:m[2]] + "the server" + msg[m[3]:]
		}
	}
	msg = strings.Replace(msg, "connection to the server broke", "its connection broke", 1)
	return msg
}

// refusedBy and brokeTo find the server a refused or broken connection
// went to, in the pool's words.
var (
	refusedBy = regexp.MustCompile(`(\S+) closed the connection before answering anything`)
	brokeTo   = regexp.MustCompile(`connection to (\S+) broke`)
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
