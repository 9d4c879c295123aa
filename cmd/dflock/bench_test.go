package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
)

func benchCmd(t *testing.T, ctx context.Context, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(ctx, append([]string{"bench"}, args...), env(nil), &out, &errOut)
	return out.String(), errOut.String(), code
}

// quickBench is a run short enough for a test.
var quickBench = []string{"--duration", "100ms", "--warmup", "1ms", "--workers", "4", "--conns", "2"}

func startBenchFake(t *testing.T, cfg fakeserver.Config) string {
	t.Helper()
	srv, err := fakeserver.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return srv.Addr()
}

func TestBenchHelpShowsOneDefaultPerFlag(t *testing.T) {
	help, _, code := benchCmd(t, context.Background(), "-h")
	assert.Equal(t, 0, code)
	// flag prints a flag's usage on the line after its name.
	for _, name := range []string{"servers", "lease"} {
		m := regexp.MustCompile(`(?m)^  -` + name + ` .*\n\s+(.*)$`).FindStringSubmatch(help)
		require.NotNil(t, m, "no -%s in %s", name, help)
		assert.Equal(t, 1, strings.Count(m[1], "default"), "-%s: %s", name, m[1])
	}
}

func TestBenchStopsWithAHint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	wrongToken := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(wrongToken, []byte("wrong\n"), 0o600))
	for _, tc := range []struct {
		name   string
		server fakeserver.Config
		args   []string
		hint   string
	}{
		{"max-locks", fakeserver.Config{MaxLocks: 8}, nil, "refused new keys: raise its --max-locks"},
		{"no token", fakeserver.Config{AuthToken: "s3cret"}, nil, "needs an auth token: pass --auth-token-file"},
		{"wrong token", fakeserver.Config{AuthToken: "s3cret"}, []string{"--auth-token-file", wrongToken}, "refused the auth token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			addr := startBenchFake(t, tc.server)
			args := append(append([]string{"--servers", addr, "--workloads", "distinct,hot"}, quickBench...), tc.args...)
			var out, errOut bytes.Buffer
			err := runBench(ctx, args, env(nil), &out, &errOut)
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(render(err), "distinct failed: "), render(err))
			var hinted interface {
				Hint() string
				ExitCode() int
			}
			require.True(t, errors.As(err, &hinted))
			assert.True(t, strings.HasPrefix(hinted.Hint(), addr+" "+tc.hint), hinted.Hint())
			assert.Equal(t, 1, hinted.ExitCode())
			assert.Contains(t, out.String(), "RUN STOPPED at distinct")
			assert.NotContains(t, out.String(), "hot: one op", "the run stopped at the failure")
		})
	}
}

func TestBenchFailureExitsNonZero(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := startBenchFake(t, fakeserver.Config{MaxLocks: 8})
	out, errOut, code := benchCmd(t, ctx, append([]string{"--servers", addr, "--workloads", "distinct"}, quickBench...)...)
	assert.Equal(t, 1, code)
	assert.True(t, strings.HasPrefix(errOut, "dflock bench: distinct failed: "), errOut)
	assert.Contains(t, errOut, "--max-locks")
	assert.Contains(t, out, "RUN STOPPED at distinct")
}

func TestBenchInterrupted(t *testing.T) {
	t.Parallel()
	addr := startBenchFake(t, fakeserver.Config{MaxLocks: -1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as SIGINT does before the first workload ends
	var out, errOut bytes.Buffer
	err := runBench(ctx, append([]string{"--servers", addr}, quickBench...), env(nil), &out, &errOut)
	require.ErrorIs(t, err, context.Canceled)
	var ec interface{ ExitCode() int }
	require.True(t, errors.As(err, &ec))
	assert.Equal(t, 130, ec.ExitCode())
	assert.Equal(t, "interrupted during raw: context canceled", render(err))
	assert.Empty(t, out.String(), "no figures, so no report")
}

func TestBenchRefusesArgumentsAndZeros(t *testing.T) {
	_, errOut, code := benchCmd(t, context.Background(), "extra")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "unexpected arguments: extra")
	_, errOut, code = benchCmd(t, context.Background(), "--workers", "0", "--duration", "0s")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "dflock bench: --workers 0: at least 1; --duration 0s: must be more than 0\n")
	_, errOut, code = benchCmd(t, context.Background(), "--workloads", "")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `--workloads "" names no workload`)
}

// An --html path that cannot be written fails before the run, not after.
func TestBenchChecksTheHTMLPathFirst(t *testing.T) {
	out, errOut, code := benchCmd(t, context.Background(), "--html", t.TempDir()+"/missing/report.html", "--workloads", "distinct")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "--html: open ")
	assert.Empty(t, out, "nothing measured")
}

func TestBenchReshard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, errOut, code := benchCmd(t, ctx, append(quickBench, "--reshard", "--strategy", "consistent", "--hold", "100")...)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "embedded fleet of 4 fakeservers")
	for _, row := range []string{"consistent 3→4 before", "consistent 3→4 during", "consistent 4→3 after"} {
		assert.Contains(t, out, row)
	}
	assert.NotContains(t, out, "stable 3→4", "--strategy picks one")
	assert.Regexp(t, `consistent 3→4 during: extra requests % [0-9.]+; held locks moved [1-9]`, out)

	_, errOut, code = benchCmd(t, ctx, "--reshard", "--workloads", "hot")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--workloads does not go with --reshard")
}

// --server-read-timeout reaches bench's clients: locks held longer than
// the server's short read timeout, with renewals further apart than it,
// keep their connection talking, and the server times none of them out.
func TestBenchHonoursServerReadTimeout(t *testing.T) {
	t.Parallel()
	srv, err := fakeserver.Start(fakeserver.Config{ReadTimeout: 2 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	_, errOut, code := benchCmd(t, context.Background(), "--servers", srv.Addr(), "--server-read-timeout", "2s",
		"--workloads", "hold-many", "--hold", "20", "--lease", "10s", "--duration", "3s", "--warmup", "1ms", "--workers", "4", "--conns", "4")
	require.Equal(t, 0, code, errOut)
	assert.Zero(t, srv.ReadTimeoutCloses(), "a connection was left silent past the server's read timeout")
}
