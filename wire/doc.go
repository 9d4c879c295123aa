// Package wire is the dflockd line protocol: the only place in dflock that
// knows bytes.
//
// A request is three '\n'-terminated lines (command, key, argument); a
// response is one line. Clients build a [Request], append it to a buffer they
// own with [Request.Append], read one line with a [LineReader] and turn it
// into a typed [Response] with [ParseResponse]. Servers do the opposite with
// [ParseRequest] and [Response.Append]. Both ends share one grammar, so a
// frame that one side writes the other side parses; dflockd itself accepts
// a little more than that grammar (see [ParseRequest]).
//
// Nothing is sent unchecked: Append rejects an empty key, whitespace in a
// key, a line over [MaxLineLen] bytes, a negative timeout, a lease or limit
// that is not positive, and says which rule failed for which value
// ([*RequestError]). A reply that does not fit the request it answers is a
// [*ReplyError] naming the reply; a well-formed non-success reply is a
// [*ServerError] that matches one of the sentinel errors with [errors.Is].
//
// The shortest correct client exchange:
//
//	req := wire.Request{Cmd: wire.CmdLock, Key: "orders", Timeout: 10}
//	buf, err := req.Append(buf[:0])
//	// write buf, then:
//	line, err := lr.ReadLine()
//	resp, err := wire.ParseResponse(req.Cmd, line)
//	if err == nil {
//		err = resp.Err() // nil when granted; wire.ErrTimeout when not
//	}
package wire
