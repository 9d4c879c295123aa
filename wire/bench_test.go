package wire_test

import (
	"testing"

	"github.com/dflock-go/dflock/wire"
)

// BenchmarkLockReleasePair encodes an l and an r request and parses their
// replies, as a client does for one acquire+release. The only allocation
// is the token string.
func BenchmarkLockReleasePair(b *testing.B) {
	buf := make([]byte, 0, 512)
	grant := []byte("ok " + tok + " 33")
	ok := []byte("ok")
	b.ReportAllocs()
	for b.Loop() {
		lock := wire.Request{Cmd: wire.CmdLock, Key: "orders/42", Timeout: 10, Lease: 30}
		buf, _ = lock.Append(buf[:0])
		resp, err := wire.ParseResponse(wire.CmdLock, grant)
		if err != nil {
			b.Fatal(err)
		}
		rel := wire.Request{Cmd: wire.CmdRelease, Key: "orders/42", Token: resp.Token}
		buf, _ = rel.Append(buf[:0])
		if _, err := wire.ParseResponse(wire.CmdRelease, ok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode measures request encoding alone: no allocation.
func BenchmarkEncode(b *testing.B) {
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		req := wire.Request{Cmd: wire.CmdRenew, Key: "orders/42", Token: tok, Lease: 30}
		buf, _ = req.Append(buf[:0])
	}
}

// BenchmarkParseFailure measures a try-lock's "timeout" reply turned into
// its error: no allocation.
func BenchmarkParseFailure(b *testing.B) {
	line := []byte("timeout")
	b.ReportAllocs()
	for b.Loop() {
		resp, _ := wire.ParseResponse(wire.CmdLock, line)
		if resp.Err() == nil {
			b.Fatal("want error")
		}
	}
}

// BenchmarkParseRequest measures the server side of an l request.
func BenchmarkParseRequest(b *testing.B) {
	cmd, key, arg := []byte("l"), []byte("orders/42"), []byte("10 30")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.ParseRequest(cmd, key, arg); err != nil {
			b.Fatal(err)
		}
	}
}
