package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
)

func startServer(t *testing.T) *fakeserver.Server {
	t.Helper()
	srv, err := fakeserver.Start(fakeserver.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return srv
}

func dflockRun(t *testing.T, srv *fakeserver.Server, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"run", "--servers", srv.Addr()}, args...), env(nil), &out, &errOut)
	return code, out.String() + errOut.String()
}

func TestRunPropagatesExitCode(t *testing.T) {
	srv := startServer(t)
	code, _ := dflockRun(t, srv, "k", "--", "sh", "-c", "exit 3")
	assert.Equal(t, 3, code)
	code, _ = dflockRun(t, srv, "k", "--", "true")
	assert.Equal(t, 0, code)
	code, _ = dflockRun(t, srv, "-n", "2", "s", "--", "sh", "-c", "kill -TERM $$")
	assert.Equal(t, 128+int(syscall.SIGTERM), code, "killed by a signal: 128+N")
	assert.Empty(t, srv.Stats().Locks, "released after the command")
	assert.Empty(t, srv.Stats().Semaphores)
}

func TestRunEnvironment(t *testing.T) {
	srv := startServer(t)
	out := filepath.Join(t.TempDir(), "env")
	code, msg := dflockRun(t, srv, "--lease", "7s", "orders", "--", "sh", "-c", `echo "$DFLOCK_KEY $DFLOCK_TOKEN $DFLOCK_SERVER" > `+out)
	require.Equal(t, 0, code, msg)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	f := strings.Fields(string(b))
	require.Len(t, f, 3)
	assert.Equal(t, "orders", f[0])
	assert.Regexp(t, "^[0-9a-f]{32}$", f[1])
	assert.Equal(t, srv.Addr(), f[2])
}

func TestRunTimeoutExitCode(t *testing.T) {
	srv := startServer(t)
	c, err := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	require.NoError(t, err)
	defer c.Close()
	ok, err := c.Lock("busy").Acquire(context.Background())
	require.NoError(t, err)
	require.True(t, ok)
	code, msg := dflockRun(t, srv, "--timeout", "1s", "busy", "--", "true")
	assert.Equal(t, exitNotAcquired, code)
	assert.Contains(t, msg, "not acquired")
}

// A lost lock stops the command and everything it started: SIGTERM to
// its process group, SIGKILL after the grace period.
func TestRunKillsTheProcessGroupOnLoss(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	// The child ignores SIGTERM (so only SIGKILL after the grace period
	// ends it) and starts a grandchild.
	script := `trap '' TERM; sleep 60 & echo $! > ` + dir + `/grandchild; echo $$ > ` + dir + `/child; wait; wait`
	done := make(chan struct{})
	var code int
	var msg string
	go func() {
		defer close(done)
		code, msg = dflockRun(t, srv, "--grace", "300ms", "k", "--", "sh", "-c", script)
	}()
	pids := make([]int, 2)
	require.Eventually(t, func() bool {
		for i, name := range []string{"child", "grandchild"} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || len(bytes.TrimSpace(b)) == 0 {
				return false
			}
			pids[i], _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		return true
	}, 5*time.Second, 10*time.Millisecond)

	lostAt := time.Now()
	srv.DropConnections()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("dflock run did not stop")
	}
	assert.Equal(t, exitLost, code, msg)
	assert.Contains(t, msg, "lost")
	assert.Less(t, time.Since(lostAt), 2*time.Second, "within the grace period and a margin")
	for _, pid := range pids {
		require.Eventually(t, func() bool {
			return syscall.Kill(pid, 0) == syscall.ESRCH || isZombie(pid)
		}, 2*time.Second, 10*time.Millisecond, "process %d is gone", pid)
	}
}

// isZombie: a killed process whose parent has not reaped it yet is gone
// for every purpose but its process table entry.
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}

func TestRunUsage(t *testing.T) {
	srv := startServer(t)
	code, msg := dflockRun(t, srv, "k")
	assert.Equal(t, 2, code)
	assert.Contains(t, msg, "usage")
}

func TestStatsCommand(t *testing.T) {
	srv := startServer(t)
	c, err := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Lock("k").Acquire(context.Background())
	require.NoError(t, err)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"stats", "--servers", srv.Addr()}, env(nil), &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), "connections")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2)
	assert.Equal(t, []string{srv.Addr(), "2", "1", "0", "0", "0"}, strings.Fields(lines[1]))

	out.Reset()
	code = run(context.Background(), []string{"stats", "--json", "--servers", srv.Addr()}, env(nil), &out, &errOut)
	require.Equal(t, 0, code)
	assert.Contains(t, out.String(), `"key": "k"`)

	code = run(context.Background(), []string{"stats", "--servers", "127.0.0.1:1"}, env(nil), &out, &errOut)
	assert.Equal(t, 1, code)
}

func TestBenchCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "--duration", "100ms", "--warmup", "10ms", "--workers", "4", "--hold", "50",
		"--workloads", "raw,distinct,hold-many"}, env(nil), &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), "embedded fleet of 3 fakeservers")
	for _, w := range []string{"raw", "distinct", "hold-many"} {
		assert.Contains(t, out.String(), w)
	}
	assert.Contains(t, out.String(), "lost 0")

	out.Reset()
	code = run(context.Background(), []string{"bench", "--json", "--duration", "50ms", "--warmup", "0s", "--workers", "2", "--workloads", "distinct"}, env(nil), &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), `"name": "distinct"`)

	code = run(context.Background(), []string{"bench", "--workloads", "nope"}, env(nil), &out, &errOut)
	assert.Equal(t, 1, code)
}
