package wire_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/wire"
)

const tok = "0123456789abcdef0123456789abcdef"

func TestRequestAppend(t *testing.T) {
	cases := []struct {
		name string
		req  wire.Request
		want string
	}{
		{"lock", wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: 10}, "l\nk\n10\n"},
		{"lock lease", wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: 0, Lease: 30}, "l\nk\n0 30\n"},
		{"release", wire.Request{Cmd: wire.CmdRelease, Key: "k", Token: tok}, "r\nk\n" + tok + "\n"},
		{"renew", wire.Request{Cmd: wire.CmdRenew, Key: "k", Token: tok}, "n\nk\n" + tok + "\n"},
		{"renew lease", wire.Request{Cmd: wire.CmdRenew, Key: "k", Token: tok, Lease: 60}, "n\nk\n" + tok + " 60\n"},
		{"enqueue", wire.Request{Cmd: wire.CmdEnqueue, Key: "k"}, "e\nk\n\n"},
		{"enqueue lease", wire.Request{Cmd: wire.CmdEnqueue, Key: "k", Lease: 5}, "e\nk\n5\n"},
		{"wait", wire.Request{Cmd: wire.CmdWait, Key: "k", Timeout: 0}, "w\nk\n0\n"},
		{"sem lock", wire.Request{Cmd: wire.CmdSemLock, Key: "k", Timeout: 3, Limit: 4}, "sl\nk\n3 4\n"},
		{"sem lock lease", wire.Request{Cmd: wire.CmdSemLock, Key: "k", Timeout: 3, Limit: 4, Lease: 9}, "sl\nk\n3 4 9\n"},
		{"sem release", wire.Request{Cmd: wire.CmdSemRelease, Key: "k", Token: tok}, "sr\nk\n" + tok + "\n"},
		{"sem renew", wire.Request{Cmd: wire.CmdSemRenew, Key: "k", Token: tok, Lease: 7}, "sn\nk\n" + tok + " 7\n"},
		{"sem enqueue", wire.Request{Cmd: wire.CmdSemEnqueue, Key: "k", Limit: 2}, "se\nk\n2\n"},
		{"sem enqueue lease", wire.Request{Cmd: wire.CmdSemEnqueue, Key: "k", Limit: 2, Lease: 8}, "se\nk\n2 8\n"},
		{"sem wait", wire.Request{Cmd: wire.CmdSemWait, Key: "k", Timeout: 12}, "sw\nk\n12\n"},
		{"stats", wire.Request{Cmd: wire.CmdStats, Key: "ignored"}, "stats\n_\n\n"},
		{"auth", wire.Request{Cmd: wire.CmdAuth, Secret: "s3cret with space"}, "auth\n_\ns3cret with space\n"},
		{"emoji key", wire.Request{Cmd: wire.CmdLock, Key: "🔒", Timeout: 1}, "l\n🔒\n1\n"},
		{"longest key", wire.Request{Cmd: wire.CmdLock, Key: strings.Repeat("k", 256), Timeout: 1}, "l\n" + strings.Repeat("k", 256) + "\n1\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prefix := []byte("keep")
			got, err := c.req.Append(prefix)
			require.NoError(t, err)
			assert.Equal(t, "keep"+c.want, string(got))
		})
	}
}

func TestRequestValidation(t *testing.T) {
	cases := []struct {
		name    string
		req     wire.Request
		field   string
		inError string
		tooLong bool
	}{
		{"unknown command", wire.Request{Cmd: 0, Key: "k"}, "command", "unknown command", false},
		{"empty key", wire.Request{Cmd: wire.CmdLock, Key: ""}, "key", "must not be empty", false},
		{"space in key", wire.Request{Cmd: wire.CmdLock, Key: "a b"}, "key", `"a b": must not contain a space`, false},
		{"tab in key", wire.Request{Cmd: wire.CmdRelease, Key: "a\tb", Token: tok}, "key", "tab", false},
		{"newline in key", wire.Request{Cmd: wire.CmdEnqueue, Key: "a\nb"}, "key", "line break", false},
		{"cr in key", wire.Request{Cmd: wire.CmdEnqueue, Key: "a\r"}, "key", "line break", false},
		{"key too long", wire.Request{Cmd: wire.CmdLock, Key: strings.Repeat("k", 257)}, "key", "257 bytes, over the limit of 256", true},
		{"negative timeout", wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: -1}, "timeout", `"-1": must not be negative`, false},
		{"negative wait timeout", wire.Request{Cmd: wire.CmdSemWait, Key: "k", Timeout: -5}, "timeout", "must not be negative", false},
		{"huge timeout", wire.Request{Cmd: wire.CmdWait, Key: "k", Timeout: wire.MaxSeconds + 1}, "timeout", "at most", false},
		{"negative lease", wire.Request{Cmd: wire.CmdLock, Key: "k", Lease: -3}, "lease", `"-3": must be positive`, false},
		{"negative renew lease", wire.Request{Cmd: wire.CmdRenew, Key: "k", Token: tok, Lease: -1}, "lease", "must be positive", false},
		{"negative enqueue lease", wire.Request{Cmd: wire.CmdEnqueue, Key: "k", Lease: -1}, "lease", "must be positive", false},
		{"zero limit", wire.Request{Cmd: wire.CmdSemLock, Key: "k", Timeout: 1}, "limit", `"0": must be positive`, false},
		{"negative limit", wire.Request{Cmd: wire.CmdSemEnqueue, Key: "k", Limit: -2}, "limit", "must be positive", false},
		{"empty token", wire.Request{Cmd: wire.CmdRelease, Key: "k"}, "token", "must not be empty", false},
		{"token with space", wire.Request{Cmd: wire.CmdSemRenew, Key: "k", Token: "a b"}, "token", "without spaces", false},
		{"token with newline", wire.Request{Cmd: wire.CmdSemRelease, Key: "k", Token: "a\nl"}, "token", "without spaces", false},
		{"token too long", wire.Request{Cmd: wire.CmdRelease, Key: "k", Token: strings.Repeat("a", 300)}, "token", "over the limit", true},
		{"renew line too long", wire.Request{Cmd: wire.CmdRenew, Key: "k", Token: strings.Repeat("a", 254), Lease: 10}, "argument", "over the limit of 256", true},
		{"empty secret", wire.Request{Cmd: wire.CmdAuth}, "secret", "must not be empty", false},
		{"padded secret", wire.Request{Cmd: wire.CmdAuth, Secret: " s"}, "secret", "whitespace", false},
		{"secret with newline", wire.Request{Cmd: wire.CmdAuth, Secret: "a\nb"}, "secret", "control", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			buf := []byte("keep")
			got, err := c.req.Append(buf)
			require.Error(t, err)
			assert.Equal(t, "keep", string(got), "nothing appended on error")
			assert.ErrorIs(t, err, wire.ErrInvalidRequest)
			assert.Equal(t, c.tooLong, errors.Is(err, wire.ErrLineTooLong))
			var re *wire.RequestError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, c.field, re.Field)
			assert.Contains(t, err.Error(), c.inError)
		})
	}
}

func TestSecretNeverInErrors(t *testing.T) {
	for _, secret := range []string{" topsecret", "top\nsecret", strings.Repeat("topsecret", 40)} {
		r := wire.Request{Cmd: wire.CmdAuth, Secret: secret}
		_, err := r.Append(nil)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "topsecret")
	}
}

func TestCheckKey(t *testing.T) {
	require.NoError(t, wire.CheckKey("orders/42"))
	require.ErrorIs(t, wire.CheckKey(""), wire.ErrInvalidRequest)
	require.ErrorIs(t, wire.CheckKey(strings.Repeat("x", 257)), wire.ErrLineTooLong)
}

func TestBlocking(t *testing.T) {
	assert.False(t, (&wire.Request{Cmd: wire.CmdLock, Timeout: 0}).Blocking())
	assert.True(t, (&wire.Request{Cmd: wire.CmdLock, Timeout: 1}).Blocking())
	assert.False(t, (&wire.Request{Cmd: wire.CmdSemLock, Timeout: 0}).Blocking())
	assert.True(t, (&wire.Request{Cmd: wire.CmdSemLock, Timeout: 2}).Blocking())
	assert.True(t, (&wire.Request{Cmd: wire.CmdWait}).Blocking())
	assert.True(t, (&wire.Request{Cmd: wire.CmdSemWait}).Blocking())
	for _, c := range []wire.Command{wire.CmdRelease, wire.CmdRenew, wire.CmdEnqueue, wire.CmdStats, wire.CmdAuth} {
		assert.False(t, (&wire.Request{Cmd: c, Timeout: 5}).Blocking(), c.String())
	}
}

func TestParseRequest(t *testing.T) {
	cases := []struct {
		cmd, key, arg string
		want          wire.Request
	}{
		{"l", "k", "10", wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: 10}},
		{"l", "k", "  0   30 ", wire.Request{Cmd: wire.CmdLock, Key: "k", Lease: 30}},
		{"l", "k", "+5 05", wire.Request{Cmd: wire.CmdLock, Key: "k", Timeout: 5, Lease: 5}},
		{"l", "k", "-0", wire.Request{Cmd: wire.CmdLock, Key: "k"}},
		{"r", "k", " " + tok + " ", wire.Request{Cmd: wire.CmdRelease, Key: "k", Token: tok}},
		{"n", "k", tok + " 7", wire.Request{Cmd: wire.CmdRenew, Key: "k", Token: tok, Lease: 7}},
		{"e", "k", "", wire.Request{Cmd: wire.CmdEnqueue, Key: "k"}},
		{"e", "k", " 4 ", wire.Request{Cmd: wire.CmdEnqueue, Key: "k", Lease: 4}},
		{"w", "k", "3", wire.Request{Cmd: wire.CmdWait, Key: "k", Timeout: 3}},
		{"sl", "k", "1 3 9", wire.Request{Cmd: wire.CmdSemLock, Key: "k", Timeout: 1, Limit: 3, Lease: 9}},
		{"sr", "k", tok, wire.Request{Cmd: wire.CmdSemRelease, Key: "k", Token: tok}},
		{"sn", "k", tok, wire.Request{Cmd: wire.CmdSemRenew, Key: "k", Token: tok}},
		{"se", "k", "2", wire.Request{Cmd: wire.CmdSemEnqueue, Key: "k", Limit: 2}},
		{"sw", "k", "0", wire.Request{Cmd: wire.CmdSemWait, Key: "k"}},
		{"stats", "", "whatever", wire.Request{Cmd: wire.CmdStats}},
		{"auth", "", "  secret  ", wire.Request{Cmd: wire.CmdAuth, Secret: "secret"}},
		{"l", "k\u00a0", "1\u00a02", wire.Request{Cmd: wire.CmdLock, Key: "k\u00a0", Timeout: 1, Lease: 2}},
	}
	for _, c := range cases {
		t.Run(c.cmd+"/"+c.arg, func(t *testing.T) {
			got, err := wire.ParseRequest([]byte(c.cmd), []byte(c.key), []byte(c.arg))
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	cases := []struct {
		cmd, key, arg string
		field         string
	}{
		{"x", "k", "1", "command"},
		{"L", "k", "1", "command"},
		{"l", "", "1", "key"},
		{"l", " ", "1", "key"},
		{"l", "a b", "1", "key"},
		{"l", "k", "", "argument"},
		{"l", "k", "1 2 3", "argument"},
		{"l", "k", "x", "timeout"},
		{"l", "k", "1.5", "timeout"},
		{"l", "k", "-1", "timeout"},
		{"l", "k", "1 0", "lease"},
		{"l", "k", "1 -4", "lease"},
		{"l", "k", "99999999999999999999", "timeout"},
		{"r", "k", "", "token"},
		{"r", "k", "a b", "token"},
		{"n", "k", "", "argument"},
		{"n", "k", tok + " 0", "lease"},
		{"e", "k", "0", "lease"},
		{"e", "k", "5 6", "lease"},
		{"w", "k", "", "argument"},
		{"w", "k", "-2", "timeout"},
		{"sl", "k", "1", "argument"},
		{"sl", "k", "1 0", "limit"},
		{"sl", "k", "1 -1 5", "limit"},
		{"se", "k", "0", "limit"},
		{"se", "k", "", "argument"},
		{"sw", "k", "", "argument"},
		{"auth", "_", "", "secret"},
	}
	for _, c := range cases {
		t.Run(c.cmd+"/"+c.key+"/"+c.arg, func(t *testing.T) {
			_, err := wire.ParseRequest([]byte(c.cmd), []byte(c.key), []byte(c.arg))
			var re *wire.RequestError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, c.field, re.Field)
			assert.ErrorIs(t, err, wire.ErrInvalidRequest)
		})
	}
}
