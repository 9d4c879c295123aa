package wire_test

import (
	"bytes"
	"testing"

	"github.com/dflock-go/dflock/wire"
)

// FuzzParseResponse: no reply panics the parser, and every reply it accepts
// encodes back to the same line and parses to the same value.
func FuzzParseResponse(f *testing.F) {
	f.Add(uint8(wire.CmdLock), []byte("ok "+tok+" 33"))
	f.Add(uint8(wire.CmdEnqueue), []byte("acquired "+tok+" 5"))
	f.Add(uint8(wire.CmdEnqueue), []byte("queued"))
	f.Add(uint8(wire.CmdRenew), []byte("ok 60"))
	f.Add(uint8(wire.CmdRelease), []byte("ok"))
	f.Add(uint8(wire.CmdStats), []byte(`ok {"connections":0,"locks":[]}`))
	f.Add(uint8(wire.CmdWait), []byte("error_lease_expired"))
	f.Add(uint8(wire.CmdLock), []byte("ok x 0"))
	f.Fuzz(func(t *testing.T, cmd uint8, line []byte) {
		resp, err := wire.ParseResponse(wire.Command(cmd), line)
		if err != nil {
			return
		}
		_ = resp.Err()
		out := resp.Append(nil)
		if !bytes.Equal(out, append(append([]byte{}, line...), '\n')) {
			t.Fatalf("reply %q encoded back as %q", line, out)
		}
		again, err := wire.ParseResponse(wire.Command(cmd), out[:len(out)-1])
		if err != nil || again != resp {
			t.Fatalf("reply %q: second parse %+v, %v; first %+v", line, again, err, resp)
		}
	})
}

// FuzzParseRequest: no request panics the parser, and every request it
// accepts encodes with Append and parses back to the same value.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("l"), []byte("k"), []byte("10 30"))
	f.Add([]byte("sl"), []byte("pool"), []byte(" +1  3 05 "))
	f.Add([]byte("n"), []byte("k"), []byte(tok+" 5"))
	f.Add([]byte("r"), []byte("k"), []byte(tok))
	f.Add([]byte("e"), []byte("k"), []byte(""))
	f.Add([]byte("se"), []byte("k"), []byte("2 9"))
	f.Add([]byte("w"), []byte("k"), []byte("0"))
	f.Add([]byte("auth"), []byte("_"), []byte(" secret "))
	f.Add([]byte("stats"), []byte("_"), []byte(""))
	f.Add([]byte("l"), []byte("🔒"), []byte("1\u00a02"))
	f.Fuzz(func(t *testing.T, cmd, key, arg []byte) {
		req, err := wire.ParseRequest(cmd, key, arg)
		if err != nil {
			return
		}
		frame, err := req.Append(nil)
		if err != nil {
			t.Fatalf("parsed %+v but Append refuses it: %v", req, err)
		}
		lines := bytes.Split(frame, []byte{'\n'})
		if len(lines) != 4 || len(lines[3]) != 0 {
			t.Fatalf("frame %q is not three lines", frame)
		}
		for _, l := range lines[:3] {
			if len(l) > wire.MaxLineLen {
				t.Fatalf("frame %q has a line over the limit", frame)
			}
		}
		again, err := wire.ParseRequest(lines[0], lines[1], lines[2])
		if err != nil || again != req {
			t.Fatalf("frame %q: second parse %+v, %v; first %+v", frame, again, err, req)
		}
	})
}
