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

// holdKey holds key on srv from another client until the test ends.
func holdKey(t *testing.T, srv *fakeserver.Server, key string) {
	t.Helper()
	c, err := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	ok, err := c.Lock(key).Acquire(context.Background())
	require.NoError(t, err)
	require.True(t, ok)
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
	holdKey(t, srv, "busy")
	code, msg := dflockRun(t, srv, "--timeout", "500ms", "busy", "--", "true")
	assert.Equal(t, exitNotAcquired, code)
	assert.Contains(t, msg, `"busy" not acquired within 1s`, "the whole seconds the server waited")
	code, msg = dflockRun(t, srv, "--timeout", "0", "busy", "--", "true")
	assert.Equal(t, exitNotAcquired, code)
	assert.Contains(t, msg, `"busy" is taken`)
	code, msg = dflockRun(t, srv, "bad key", "--", "true")
	assert.Equal(t, 2, code, "an invalid key is a usage error")
	assert.Contains(t, msg, "must not contain a space")
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
	dropAndWait(t, srv, done)
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

// Usage errors exit 2 with one line that says what is wrong, under
// dflock run's prefix, then the usage.
func TestRunUsageErrors(t *testing.T) {
	srv := startServer(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing KEY and command"},
		{[]string{"k"}, "missing command"},
		{[]string{"k", "--"}, "missing command"},
		{[]string{"", "--", "true"}, "empty KEY"},
		{[]string{"k", "-n", "2", "--", "true"}, "-n after KEY: flags go before KEY"},
		{[]string{"-n", "0", "k", "--", "true"}, "-n 0: a semaphore has at least 1 slot"},
		{[]string{"-n", "-1", "k", "--", "true"}, "-n -1: a semaphore has at least 1 slot"},
		{[]string{"--lease", "500ms", "k", "--", "true"}, "--lease 500ms: the server counts leases in whole seconds; ask for at least 1s"},
		{[]string{"--lease", "-1s", "k", "--", "true"}, "--lease -1s must not be negative"},
		{[]string{"--timeout", "-1s", "k", "--", "true"}, "--timeout -1s must not be negative"},
		{[]string{"--grace", "-1s", "k", "--", "true"}, "--grace -1s must not be negative"},
		{[]string{"--timeout", "soon", "k", "--", "true"}, `invalid value "soon" for flag -timeout: parse error: not a duration (such as 500ms, 5s, 2m)`},
		{[]string{"--timeout", "5", "k", "--", "true"}, `invalid value "5" for flag -timeout: a duration needs a unit: 5s, 5ms`},
		{[]string{"--", "echo", "hi"}, "missing KEY before -- echo"},
		{[]string{"k1", "k2", "--", "true"}, "k2 after KEY: one KEY (or --all KEY,KEY...), then -- and the command"},
		{[]string{"--bogus", "k", "--", "true"}, "flag provided but not defined: -bogus"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, msg := dflockRun(t, srv, tc.args...)
			assert.Equal(t, 2, code, msg)
			assert.True(t, strings.HasPrefix(msg, "dflock run: "+tc.want+"\n"), msg)
			assert.Equal(t, 1, strings.Count(msg, "dflock run:"), "one prefix: %s", msg)
			assert.Contains(t, msg, runUsage)
		})
	}
	assert.Empty(t, srv.Stats().Locks)
}

func TestRunHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"run", "-h"}, env(nil), &out, &errOut)
	assert.Equal(t, 0, code)
	assert.Empty(t, errOut.String())
	assert.True(t, strings.HasPrefix(out.String(), runUsage+"\n"), out.String())
	assert.Contains(t, out.String(), "exit codes:")
	assert.Contains(t, out.String(), "-lease duration")
}

// A command that cannot run exits as a shell reports it: 127 not found,
// 126 found but not executable, with the reason.
func TestRunCommandErrors(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(content), mode))
		return path
	}
	plain := write("plain", "echo hi\n", 0o644)
	garbage := write("garbage", "\x7fELF\x00not really", 0o755)
	badInterp := write("bad-interp", "#!/no/such/interpreter\n", 0o755)
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name, command string
		code          int
		want          string
	}{
		{"not found", "dflock-test-no-such-command", exitNotFound, "dflock-test-no-such-command: command not found"},
		{"missing file", missing, exitNotFound, missing + ": no such file or directory"},
		{"not executable", plain, exitCannotExecute, plain + ": permission denied"},
		{"directory", dir, exitCannotExecute, dir + ": is a directory"},
		{"not a program", garbage, exitCannotExecute, garbage + ": cannot execute: exec format error"},
		{"bad interpreter", badInterp, exitCannotExecute, badInterp + ": cannot execute: its interpreter (#! line) or loader is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := dflockRun(t, srv, "k", "--", tc.command, "arg")
			assert.Equal(t, tc.code, code, msg)
			assert.Equal(t, "dflock run: "+tc.want+"\n", msg)
			require.Eventually(t, func() bool { return len(srv.Stats().Locks) == 0 }, 5*time.Second, 10*time.Millisecond, "released")
		})
	}
}

// The command is looked for before the lock is taken: a missing one
// says so at once instead of waiting for the lock, or taking it.
func TestRunLooksForTheCommandFirst(t *testing.T) {
	srv := startServer(t)
	holdKey(t, srv, "busy")
	code, msg := dflockRun(t, srv, "--timeout", "0", "busy", "--", "dflock-test-no-such-command")
	assert.Equal(t, exitNotFound, code, msg)
}

// A lease of a second or more that is not whole seconds is rounded up.
func TestRunLeaseRoundsUpToWholeSeconds(t *testing.T) {
	srv := startServer(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	done := make(chan int, 1)
	go func() {
		code, _ := dflockRun(t, srv, "--lease", "1500ms", "k", "--", "sh", "-c", "read x < "+fifo)
		done <- code
	}()
	require.Eventually(t, func() bool { return len(srv.Stats().Locks) == 1 }, 5*time.Second, 10*time.Millisecond)
	lease := srv.Stats().Locks[0].LeaseExpiresInS
	assert.Greater(t, lease, 1.5)
	assert.LessOrEqual(t, lease, 2.0)

	// Let the command end: open the fifo for writing once it has it open
	// for reading.
	var w *os.File
	require.Eventually(t, func() bool {
		var err error
		w, err = os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	_, err := w.Write([]byte("go\n"))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	select {
	case code := <-done:
		assert.Equal(t, 0, code)
	case <-time.After(10 * time.Second):
		t.Fatal("dflock run did not end")
	}
}

func TestStatsCommand(t *testing.T) {
	srv := startServer(t)
	holdKey(t, srv, "k")
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
	assert.Equal(t, 2, code, "a usage error")
	assert.Contains(t, errOut.String(), `dflock bench: --workloads: no workload "nope"`)
}

// dflock's own errors exit 1 under dflock run's prefix, with a hint
// where the user can fix them.
func TestRunReportsServerErrors(t *testing.T) {
	srv, err := fakeserver.Start(fakeserver.Config{AuthToken: "s3cret"})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	code, msg := dflockRun(t, srv, "k", "--", "true")
	assert.Equal(t, 1, code, msg)
	lines := strings.Split(strings.TrimSuffix(msg, "\n"), "\n")
	require.Len(t, lines, 2, msg)
	for _, l := range lines {
		assert.True(t, strings.HasPrefix(l, "dflock run: "), l)
		assert.Equal(t, 1, strings.Count(l, "dflock run:"), "one prefix: %s", l)
		assert.NotContains(t, l, "dflock: ", "one prefix: %s", l)
	}
	assert.True(t, strings.HasPrefix(lines[1], "dflock run: hint: "), lines[1])
}

// A server with a short --read-timeout times out the connection that
// holds the lock unless dflock is told; the loss then says why, and how
// to tell it.
func TestRunOnAServerWithAShortReadTimeout(t *testing.T) {
	srv, err := fakeserver.Start(fakeserver.Config{ReadTimeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })

	code, msg := dflockRun(t, srv, "k1", "--", "sleep", "2")
	assert.Equal(t, exitLost, code, msg)
	assert.Contains(t, msg, "closed by the server's read timeout")
	assert.Contains(t, msg, "pass it as --server-read-timeout")

	code, msg = dflockRun(t, srv, "--server-read-timeout", "1s", "k2", "--", "sleep", "2")
	assert.Equal(t, 0, code, msg)
}

func TestRunReplicas(t *testing.T) {
	fleet, err := fakeserver.StartFleet(3, fakeserver.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { fleet.Close() })
	servers := strings.Join(fleet.Addrs(), ",")
	out := filepath.Join(t.TempDir(), "env")
	// While the command runs, a quorum of the three holds the key.
	script := `echo "$DFLOCK_SERVER $DFLOCK_TOKEN" > ` + out
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"run", "--servers", servers, "--replicas", "3", "orders", "--", "sh", "-c", script}, env(nil), &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	f := strings.Fields(string(b))
	require.Len(t, f, 2)
	assert.ElementsMatch(t, fleet.Addrs(), strings.Split(f[0], ","), "all three servers")
	assert.Regexp(t, "^[0-9a-f]{32}$", f[1])
	for _, srv := range fleet.Servers {
		assert.Empty(t, srv.Stats().Locks, "released everywhere after the command")
	}

	code = run(context.Background(), []string{"run", "--servers", servers, "--replicas", "2", "k", "--", "true"}, env(nil), &stdout, &stderr)
	assert.Equal(t, 2, code, "an even count is a usage error")
	assert.Contains(t, stderr.String(), "--replicas 2: an odd number")
	stderr.Reset()
	code = run(context.Background(), []string{"run", "--servers", fleet.Addrs()[0], "--replicas", "3", "k", "--", "true"}, env(nil), &stdout, &stderr)
	assert.Equal(t, 2, code, "more replicas than servers is a usage error")
	assert.Contains(t, stderr.String(), "dflock run: --replicas 3 needs at least 3 servers; the fleet has 1\n")
}

// A fleet file gives the servers in place of --servers, to run and stats;
// during a change, stats lists the servers of both memberships.
func TestFleetFileFlag(t *testing.T) {
	a, b := startServer(t), startServer(t)
	path := filepath.Join(t.TempDir(), "fleet.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"servers": ["`+b.Addr()+`"], "previous": ["`+a.Addr()+`"]}`), 0o600))
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"run", "--fleet", path, "k", "--", "sh", "-c", `test "$DFLOCK_SERVER" = "` + b.Addr() + `"`}, env(nil), &out, &errOut)
	assert.Equal(t, 0, code, errOut.String())
	out.Reset()
	code = run(context.Background(), []string{"stats"}, env(map[string]string{"DFLOCK_FLEET": path}), &out, &errOut)
	assert.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), a.Addr())
	assert.Contains(t, out.String(), b.Addr())
	code = run(context.Background(), []string{"stats", "--fleet", path + ".missing"}, env(nil), &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut.String(), "reading the fleet file")
	for _, cmd := range [][]string{{"stats", "--fleet", path, "--servers", a.Addr()}, {"run", "--fleet", path, "--servers", a.Addr(), "k", "--", "true"}} {
		errOut.Reset()
		code = run(context.Background(), cmd, env(nil), &out, &errOut)
		assert.Equal(t, 2, code, cmd)
		assert.Contains(t, errOut.String(), "both name the servers", cmd)
	}
	// The environment's fleet file wins over its server list.
	errOut.Reset()
	code = run(context.Background(), []string{"run", "k", "--", "true"}, env(map[string]string{"DFLOCK_FLEET": path, "DFLOCK_SERVERS": "127.0.0.1:1"}), &out, &errOut)
	assert.Equal(t, 0, code, errOut.String())
}

// --all holds every key while the command runs, and lists them, their
// tokens and servers in the environment, in byte order.
func TestRunAll(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	script := `echo "$DFLOCK_KEY $DFLOCK_TOKEN $DFLOCK_SERVER" > ` + dir + `/env; while [ ! -e ` + dir + `/go ]; do sleep 0.01; done`
	done := make(chan struct{})
	var code int
	var msg string
	go func() {
		defer close(done)
		code, msg = dflockRun(t, srv, "--all", "orders,accounts", "--", "sh", "-c", script)
	}()
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "env"))
		return err == nil && bytes.HasSuffix(b, []byte("\n"))
	}, 5*time.Second, 10*time.Millisecond)
	held := map[string]bool{}
	for _, l := range srv.Stats().Locks {
		held[l.Key] = l.OwnerConnID != 0
	}
	assert.Equal(t, map[string]bool{"accounts": true, "orders": true}, held)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o600))
	<-done
	require.Equal(t, 0, code, msg)
	b, err := os.ReadFile(filepath.Join(dir, "env"))
	require.NoError(t, err)
	f := strings.Fields(string(b))
	require.Len(t, f, 3)
	assert.Equal(t, "accounts,orders", f[0])
	assert.Regexp(t, "^[0-9a-f]{32},[0-9a-f]{32}$", f[1])
	assert.Equal(t, srv.Addr()+","+srv.Addr(), f[2])
	assert.Empty(t, srv.Stats().Locks, "released after the command")

	// A busy key: nothing held, exit 75.
	holdKey(t, srv, "busy")
	code, msg = dflockRun(t, srv, "--all", "free,busy", "--timeout", "500ms", "--", "true")
	assert.Equal(t, exitNotAcquired, code, msg)
	assert.Contains(t, msg, `"busy" not acquired within 1s (none of the 2 keys held)`)
	code, msg = dflockRun(t, srv, "--all", "free,busy", "--timeout", "0", "--", "true")
	assert.Equal(t, exitNotAcquired, code, msg)
	assert.Contains(t, msg, `"busy" is taken (none of the 2 keys acquired; --timeout 0 tries once)`)
	for _, l := range srv.Stats().Locks {
		assert.NotEqual(t, "free", l.Key, "given back")
	}

	// Slots of semaphores.
	code, msg = dflockRun(t, srv, "-n", "2", "--all", "s1,s2", "--", "true")
	assert.Equal(t, 0, code, msg)

	// Bad lists are usage errors.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--all", "a,,b", "--", "true"}, `--all "a,,b": an empty key`},
		{[]string{"--all", "", "--", "true"}, `--all "": an empty key`},
		{[]string{"--all", "a,a", "--", "true"}, `key "a" is given twice`},
		{[]string{"--all", "a,b"}, "missing command"},
		{[]string{"--all", "a,b", "mykey", "--", "true"}, "mykey after the flags: with --all, every key goes in --all, and the command after --"},
	} {
		code, msg := dflockRun(t, srv, tc.args...)
		assert.Equal(t, 2, code, "%v: %s", tc.args, msg)
		assert.Contains(t, msg, tc.want)
	}

	// Spaces around the commas go; the command may take -- itself.
	code, msg = dflockRun(t, srv, "--all", "a, b", "--", "sh", "-c", `test "$DFLOCK_KEY" = a,b && test "$1" = --`, "sh", "--")
	assert.Equal(t, 0, code, msg)
}

// Losing any key of --all stops the command.
func TestRunAllStopsTheCommandOnLoss(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	done := make(chan struct{})
	var code int
	var msg string
	go func() {
		defer close(done)
		code, msg = dflockRun(t, srv, "--grace", "300ms", "--all", "a,b", "--", "sh", "-c", "echo $$ > "+dir+"/pid; sleep 60")
	}()
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "pid"))
		return err == nil && len(bytes.TrimSpace(b)) > 0
	}, 5*time.Second, 10*time.Millisecond)
	dropAndWait(t, srv, done)
	assert.Equal(t, exitLost, code, msg)
	assert.Contains(t, msg, "lost a key of a,b")
}

// dropAndWait drops srv's connections, which loses the locks dflock run
// holds there, and waits for the run to end (done closes).
func dropAndWait(t *testing.T, srv *fakeserver.Server, done <-chan struct{}) {
	t.Helper()
	srv.DropConnections()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("dflock run did not stop")
	}
}
