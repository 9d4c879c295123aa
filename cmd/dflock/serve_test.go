package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/internal/testlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestServeFlagsDefaultsMatchTheRealServer(t *testing.T) {
	f, err := parseServeFlags(nil, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, serveFlags{
		host: "127.0.0.1", port: 6388, defaultLeaseTTL: 33, leaseSweepInterval: 1, gcInterval: 5,
		gcMaxIdle: 60, maxLocks: 1024, readTimeout: 23, writeTimeout: 5, shutdownTimeout: 30,
		autoReleaseOnDisconnect: true,
	}, f)
}

func TestServeFlagsFromEnvironmentAndCommandLine(t *testing.T) {
	f, err := parseServeFlags([]string{"-port", "7000", "-max-waiters=3"}, env(map[string]string{
		"DFLOCKD_PORT":                       "6500",
		"DFLOCKD_MAX_LOCKS":                  "50",
		"DFLOCKD_AUTO_RELEASE_ON_DISCONNECT": "false",
		"DFLOCKD_AUTH_TOKEN":                 "s3cret",
		"DFLOCKD_READ_TIMEOUT_S":             "2",
	}), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, 7000, f.port, "the command line wins over the environment")
	assert.Equal(t, 50, f.maxLocks)
	assert.Equal(t, 3, f.maxWaiters)
	assert.False(t, f.autoReleaseOnDisconnect)
	assert.Equal(t, "s3cret", f.authToken)
	cfg, err := f.config(nil)
	require.NoError(t, err)
	assert.True(t, cfg.DisableAutoRelease)
	assert.Equal(t, 2*time.Second, cfg.ReadTimeout)
}

func TestServeFlagErrors(t *testing.T) {
	_, err := parseServeFlags(nil, env(map[string]string{"DFLOCKD_PORT": "x"}), &bytes.Buffer{})
	assert.ErrorContains(t, err, "DFLOCKD_PORT")
	_, err = parseServeFlags([]string{"-nope"}, env(nil), &bytes.Buffer{})
	assert.Error(t, err)
	for _, args := range [][]string{{"-default-lease-ttl", "0"}, {"-max-locks", "0"}} {
		_, err := parseServeFlags(args, env(nil), &bytes.Buffer{})
		assert.ErrorAs(t, err, new(errUsage), args)
	}
	for _, args := range [][]string{{"-tls-cert", "a.pem"}, {"-tls-cert", "a", "-tls-key", "b"}} {
		f, err := parseServeFlags(args, env(nil), &bytes.Buffer{})
		require.NoError(t, err)
		_, err = f.config(nil)
		assert.Error(t, err, args)
	}
}

// serving runs dflock serve with args and vars until the returned stop
// is called; stop waits for a graceful shutdown and returns its error.
func serving(t *testing.T, args []string, vars map[string]string, logs io.Writer) (addr string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, append([]string{"-port", "0"}, args...), env(vars), io.Discard, logs, func(a string) { addrs <- a })
	}()
	stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			return errors.New("serve did not stop")
		}
	}
	select {
	case addr = <-addrs:
	case err := <-done:
		cancel()
		t.Fatal(err)
	case <-time.After(5 * time.Second):
		stop()
		t.Fatal("serve did not start")
	}
	return addr, stop
}

// exchange sends req (whole requests) on a new connection to addr and
// returns the replies, joined by " | ".
func exchange(t *testing.T, addr, req string) string {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = nc.Write([]byte(req))
	require.NoError(t, err)
	r := bufio.NewReader(nc)
	var lines []string
	for range strings.Count(req, "\n") / 3 {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		lines = append(lines, strings.TrimSpace(line))
	}
	return strings.Join(lines, " | ")
}

func TestServeRunsAndShutsDown(t *testing.T) {
	var logs testlog.Buffer
	addr, stop := serving(t, []string{"-default-lease-ttl", "9"}, nil, &logs)
	assert.Regexp(t, `^ok [0-9a-f]{32} 9$`, exchange(t, addr, "l\nk\n0\n"))
	require.NoError(t, stop())
	assert.Contains(t, logs.String(), "listening")
	assert.Contains(t, logs.String(), "shutting down")
}

func TestRunDispatch(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run(context.Background(), nil, env(nil), &out, &errOut))
	assert.Equal(t, 2, run(context.Background(), []string{"bogus"}, env(nil), &out, &errOut))
	assert.Contains(t, errOut.String(), `unknown command "bogus"`)
	assert.Equal(t, 0, run(context.Background(), []string{"help"}, env(nil), &out, &errOut))
	assert.True(t, strings.Contains(out.String(), "serve"))
	assert.Equal(t, 0, run(context.Background(), []string{"serve", "-h"}, env(nil), &out, &errOut))
}

// TestServeAcceptsEverySettingOfTheRealServer lists every flag of dflockd
// v1.10 with the environment variable the real server reads for it, and
// checks each the way the real server resolves it: the variable alone
// sets it, and the flag on the command line wins over the variable.
func TestServeAcceptsEverySettingOfTheRealServer(t *testing.T) {
	type setting struct {
		flag, env       string
		flagVal, envVal string
		get             func(serveFlags) any
		fromFlag        any
		fromEnv         any
	}
	settings := []setting{
		{"host", "DFLOCKD_HOST", "10.0.0.1", "10.0.0.2", func(f serveFlags) any { return f.host }, "10.0.0.1", "10.0.0.2"},
		{"port", "DFLOCKD_PORT", "7001", "7002", func(f serveFlags) any { return f.port }, 7001, 7002},
		{"default-lease-ttl", "DFLOCKD_DEFAULT_LEASE_TTL_S", "11", "12", func(f serveFlags) any { return f.defaultLeaseTTL }, 11, 12},
		{"lease-sweep-interval", "DFLOCKD_LEASE_SWEEP_INTERVAL_S", "3", "4", func(f serveFlags) any { return f.leaseSweepInterval }, 3, 4},
		{"gc-interval", "DFLOCKD_GC_LOOP_SLEEP", "6", "7", func(f serveFlags) any { return f.gcInterval }, 6, 7},
		{"gc-max-idle", "DFLOCKD_GC_MAX_UNUSED_TIME", "61", "62", func(f serveFlags) any { return f.gcMaxIdle }, 61, 62},
		{"max-locks", "DFLOCKD_MAX_LOCKS", "100", "200", func(f serveFlags) any { return f.maxLocks }, 100, 200},
		{"max-connections", "DFLOCKD_MAX_CONNECTIONS", "5", "6", func(f serveFlags) any { return f.maxConnections }, 5, 6},
		{"max-waiters", "DFLOCKD_MAX_WAITERS", "8", "9", func(f serveFlags) any { return f.maxWaiters }, 8, 9},
		{"read-timeout", "DFLOCKD_READ_TIMEOUT_S", "21", "22", func(f serveFlags) any { return f.readTimeout }, 21, 22},
		{"write-timeout", "DFLOCKD_WRITE_TIMEOUT_S", "0", "2", func(f serveFlags) any { return f.writeTimeout }, 0, 2},
		{"shutdown-timeout", "DFLOCKD_SHUTDOWN_TIMEOUT_S", "0", "31", func(f serveFlags) any { return f.shutdownTimeout }, 0, 31},
		{"auto-release-on-disconnect", "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT", "false", "no", func(f serveFlags) any { return f.autoReleaseOnDisconnect }, false, false},
		{"tls-cert", "DFLOCKD_TLS_CERT", "c1.pem", "c2.pem", func(f serveFlags) any { return f.tlsCert }, "c1.pem", "c2.pem"},
		{"tls-key", "DFLOCKD_TLS_KEY", "k1.pem", "k2.pem", func(f serveFlags) any { return f.tlsKey }, "k1.pem", "k2.pem"},
		{"debug", "DFLOCKD_DEBUG", "true", "YES", func(f serveFlags) any { return f.debug }, true, true},
	}
	// The token flags and -version are checked on their own below.
	others := []string{"auth-token", "auth-token-file", "version"}

	var defined []string
	newServeFlagSet(&serveFlags{}, io.Discard).VisitAll(func(fl *flag.Flag) { defined = append(defined, fl.Name) })
	var want []string
	for _, s := range settings {
		want = append(want, s.flag)
	}
	assert.ElementsMatch(t, append(want, others...), defined, "dflock serve has exactly the real server's flags")

	for _, s := range settings {
		f, err := parseServeFlags(nil, env(map[string]string{s.env: s.envVal}), io.Discard)
		require.NoError(t, err, s.env)
		assert.Equal(t, s.fromEnv, s.get(f), "%s alone", s.env)
		f, err = parseServeFlags([]string{"-" + s.flag + "=" + s.flagVal}, env(map[string]string{s.env: s.envVal}), io.Discard)
		require.NoError(t, err, s.flag)
		assert.Equal(t, s.fromFlag, s.get(f), "-%s beats %s", s.flag, s.env)
	}
}

func TestServeAuthTokenOrder(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	flagFile, envFile, empty := write("flag", "  from-flag-file\n"), write("env", "from-env-file\n"), write("empty", " \n")
	for _, c := range []struct {
		args []string
		vars map[string]string
		want string
	}{
		{nil, nil, ""},
		{[]string{"-auth-token", "flag"}, map[string]string{"DFLOCKD_AUTH_TOKEN": "env"}, "env"},
		{[]string{"-auth-token", "flag", "-auth-token-file", flagFile}, nil, "flag"},
		{[]string{"-auth-token-file", flagFile}, map[string]string{"DFLOCKD_AUTH_TOKEN_FILE": envFile}, "from-flag-file"},
		{nil, map[string]string{"DFLOCKD_AUTH_TOKEN_FILE": envFile}, "from-env-file"},
		{nil, map[string]string{"DFLOCKD_AUTH_TOKEN_FILE": envFile, "DFLOCKD_AUTH_TOKEN": "env"}, "env"},
	} {
		f, err := parseServeFlags(c.args, env(c.vars), io.Discard)
		require.NoError(t, err, c)
		assert.Equal(t, c.want, f.authToken, "%v %v", c.args, c.vars)
	}

	_, err := parseServeFlags([]string{"-auth-token-file", empty}, env(nil), io.Discard)
	assert.ErrorContains(t, err, "empty: refusing to serve without auth", "the real server would serve everyone")
	_, err = parseServeFlags(nil, env(map[string]string{"DFLOCKD_AUTH_TOKEN_FILE": filepath.Join(dir, "missing")}), io.Discard)
	assert.ErrorContains(t, err, "reading the auth token file")
}

func TestServeRefusesWhatTheRealServerSilentlyIgnores(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"DFLOCKD_READ_TIMEOUT is not a dflockd setting":       {"DFLOCKD_READ_TIMEOUT": "2"},
		"use DFLOCKD_DEFAULT_LEASE_TTL_S":                     {"DFLOCKD_DEFAULT_LEASE_TTL": "2"},
		"use DFLOCKD_GC_LOOP_SLEEP":                           {"DFLOCKD_GC_INTERVAL": "2"},
		`DFLOCKD_PORT="x": not a valid value for -port`:       {"DFLOCKD_PORT": "x"},
		`DFLOCKD_DEBUG="maybe": not a valid value for -debug`: {"DFLOCKD_DEBUG": "maybe"},
	} {
		_, err := parseServeFlags(nil, env(vars), io.Discard)
		assert.ErrorContains(t, err, name)
	}
	for _, args := range [][]string{
		{"-default-lease-ttl", "0"}, {"-max-locks", "0"}, {"-write-timeout", "-1"}, {"-shutdown-timeout", "-1"},
		{"-port", "65536"}, {"-max-connections", "-1"}, {"-max-waiters", "-1"}, {"-gc-max-idle", "0"},
	} {
		_, err := parseServeFlags(args, env(nil), io.Discard)
		assert.ErrorAs(t, err, new(errUsage), args)
	}
	for _, args := range [][]string{{"-tls-cert", "a.pem"}, {"-tls-cert", "a", "-tls-key", "b"}} {
		f, err := parseServeFlags(args, env(nil), io.Discard)
		require.NoError(t, err)
		_, err = f.config(nil)
		assert.Error(t, err, args)
	}
}

// Every DFLOCKD_ variable that dflockd does not read is refused, by
// name, not only the guessed names of the settings it reads otherwise.
func TestServeRefusesEveryUnknownDflockdVariable(t *testing.T) {
	vars := map[string]string{"DFLOCKD_MAX_LOCK": "5", "DFLOCKD_PORT": "7000", "DFLOCKD_TOKEN": "x", "DFLOCKD_EMPTY": "", "DFLOCK_SERVERS": "a:1"}
	var environ []string
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	err := refuseUnknownVars(environ, env(vars))
	assert.ErrorAs(t, err, new(errUsage))
	assert.EqualError(t, err, "DFLOCKD_MAX_LOCK, DFLOCKD_TOKEN are not dflockd settings (dflockd ignores them); dflock serve -h lists the DFLOCKD_* variables")

	delete(vars, "DFLOCKD_TOKEN")
	assert.EqualError(t, refuseUnknownVars(environ, env(vars)), "DFLOCKD_MAX_LOCK is not a dflockd setting (dflockd ignores it); dflock serve -h lists the DFLOCKD_* variables",
		"only the variables set, as getenv reads them")
	delete(vars, "DFLOCKD_MAX_LOCK")
	assert.NoError(t, refuseUnknownVars(environ, env(vars)), "the variables dflockd reads, an empty one, and others than DFLOCKD_*")

	// As a process: dflock serve reads the names from its environment,
	// and does not start.
	cmd := dflockCommand(t, "serve", "--port", "0")
	cmd.Env = append(cmd.Env, "DFLOCKD_MAX_LOCK=5")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	p := startProcess(t, cmd)
	assert.Equal(t, 2, p.exitCode(t, 10*time.Second))
	assert.Equal(t, "dflock serve: DFLOCKD_MAX_LOCK is not a dflockd setting (dflockd ignores it); dflock serve -h lists the DFLOCKD_* variables\n", stderr.String())
}

func TestServeVersion(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, runServe(context.Background(), []string{"-version"}, env(nil), &out, io.Discard, nil))
	assert.Regexp(t, `^dflock \S+ \(serves the protocol of dflockd v1\.10\)\n$`, out.String())
}

// TestServeWithTokenFileFromEnvironmentRequiresAuth is the case that ran
// open before: the token file named only by DFLOCKD_AUTH_TOKEN_FILE.
func TestServeWithTokenFileFromEnvironmentRequiresAuth(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "tok")
	require.NoError(t, os.WriteFile(tok, []byte("s3cret\n"), 0o600))
	addr, stop := serving(t, nil, map[string]string{"DFLOCKD_AUTH_TOKEN_FILE": tok}, io.Discard)
	assert.Equal(t, "error_auth", exchange(t, addr, "l\nk\n0\n"))
	assert.Regexp(t, `^ok \| ok [0-9a-f]{32} 33$`, exchange(t, addr, "auth\n_\ns3cret\nl\nk\n0\n"))
	require.NoError(t, stop())
}

// Like dflockd, serve drains on SIGTERM: open connections are served
// until they close or the shutdown timeout passes, which is a normal end.
func TestServeDrainsThenEndsAtTheShutdownTimeout(t *testing.T) {
	var logs testlog.Buffer
	addr, stop := serving(t, []string{"-shutdown-timeout", "1"}, nil, &logs)
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(nc)
	_, err = nc.Write([]byte("l\nk\n0\n"))
	require.NoError(t, err)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	tok := strings.Fields(line)[1]

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "shutting down") }, 5*time.Second, time.Millisecond)
	_, err = nc.Write([]byte("n\nk\n" + tok + "\n"))
	require.NoError(t, err)
	line, err = r.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "ok 33\n", line, "still served while draining")
	require.NoError(t, <-stopped, "the timeout ends the drain normally")
	assert.Contains(t, logs.String(), "shutdown timeout reached")
}
