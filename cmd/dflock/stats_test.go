package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
)

func TestStatsTableHasNoPaddingAndReportsFailuresApart(t *testing.T) {
	srv := startServer(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"stats", "--servers", srv.Addr() + ",127.0.0.1:1"}, env(nil), &out, &errOut)
	assert.Equal(t, 1, code)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 2, "a header and the server that answered: %q", out.String())
	assert.Equal(t, []string{srv.Addr(), "1", "0", "0", "0", "0"}, strings.Fields(lines[1]))
	for _, l := range lines {
		assert.Equal(t, strings.TrimRight(l, " "), l, "no trailing spaces")
	}
	assert.Regexp(t, `(?m)^dflock stats: 127\.0\.0\.1:1: .*\n`, errOut.String())
	assert.Contains(t, errOut.String(), "dflock stats: stats failed on 1 of 2 servers\n")
}

func TestCommandsHintAtWhatTheUserCanFix(t *testing.T) {
	srv, err := fakeserver.Start(fakeserver.Config{AuthToken: "s3cret"})
	require.NoError(t, err)
	defer srv.Close()
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"stats", "--servers", srv.Addr()}, env(nil), &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut.String(), "the server requires an auth token")
	assert.Contains(t, errOut.String(), "dflock stats: hint: "+srv.Addr()+" needs an auth token: pass --auth-token-file FILE (or set DFLOCK_AUTH_TOKEN_FILE)")

	assert.Equal(t, "the server refused new keys: raise its --max-locks", hint(fmt.Errorf("x: %w", lock.ErrMaxLocks), nil))
	assert.Equal(t, "the server refused the auth token: check the file --auth-token-file (or DFLOCK_AUTH_TOKEN_FILE) names",
		hint(lock.ErrAuth, &clientFlags{authTokenFile: "tok"}))
	assert.Empty(t, hint(lock.ErrTimeout, nil))
	assert.Empty(t, hint(fmt.Errorf("x: %w", lock.ErrRefused), nil), "no server named to look at: no cause to give")

	// A command's own hint, or its none, stands: the generic one is not
	// asked for (it would look at the server again).
	var buf bytes.Buffer
	assert.Equal(t, 1, exitCode(&buf, "stats", &commandError{err: fmt.Errorf("x: %w", lock.ErrMaxLocks)}))
	assert.Equal(t, "dflock stats: x: the server tracks as many keys as its --max-locks allows\n", buf.String())
}

func TestStatsJSONFailsWhenAServerFails(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"stats", "--json", "--servers", "127.0.0.1:1"}, env(nil), &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, out.String(), `"error"`)
	out.Reset()
	errOut.Reset()
	code = run(context.Background(), []string{"stats", "--servers", "127.0.0.1:1"}, env(nil), &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Empty(t, out.String(), "no header without a row")
}
