package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
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
		"DFLOCKD_READ_TIMEOUT":               "2",
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
	for _, args := range [][]string{{"-default-lease-ttl", "0"}, {"-max-locks", "0"}, {"-tls-cert", "a.pem"}, {"-tls-cert", "a", "-tls-key", "b"}} {
		f, err := parseServeFlags(args, env(nil), &bytes.Buffer{})
		require.NoError(t, err)
		_, err = f.config(nil)
		assert.Error(t, err, args)
	}
}

func TestServeRunsAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs testlog.Buffer
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, []string{"-port", "0", "-default-lease-ttl", "9"}, env(nil), &logs, func(a string) { addrs <- a })
	}()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not start")
	}
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = nc.Write([]byte("l\nk\n0\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(nc).ReadString('\n')
	require.NoError(t, err)
	assert.Regexp(t, `^ok [0-9a-f]{32} 9\n$`, line)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not stop")
	}
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
	assert.Equal(t, 2, run(context.Background(), []string{"serve", "-h"}, env(nil), &out, &errOut))
}
