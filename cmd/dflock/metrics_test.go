package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// freeAddr returns a loopback address nothing listens on (just now).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// dflock run --metrics-addr serves the client's metrics while the command
// runs: a scrape finds the lock held, its acquisition, and the pool.
func TestRunServesMetrics(t *testing.T) {
	srv := startServer(t)
	addr := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan int, 1)
	var out, errOut bytes.Buffer
	go func() {
		done <- run(ctx, []string{"run", "--servers", srv.Addr(), "--metrics-addr", addr, "k", "--", "sleep", "2"}, env(nil), &out, &errOut)
	}()
	series := []string{
		`(?m)^dflock_locks_held\{.*\} 1$`,
		`dflock_acquisitions_total\{.*dflock_kind="lock".*server_address="` + regexp.QuoteMeta(srv.Addr()) + `".*\} 1`,
		`dflock_acquire_duration_seconds_bucket\{.*dflock_outcome="acquired"`,
		`dflock_pool_requests_total\{.*server_address=`,
		`dflock_pool_connections\{.*dflock_connection_kind="shared"`,
	}
	// Until a scrape has them all: the lock is counted held a moment
	// before its acquisition is recorded.
	var body string
	missing := func() []string {
		var gone []string
		for _, re := range series {
			if !regexp.MustCompile(re).MatchString(body) {
				gone = append(gone, re)
			}
		}
		return gone
	}
	if !assert.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return len(missing()) == 0
	}, 10*time.Second, 10*time.Millisecond) {
		t.Fatalf("series missing from the last scrape: %v", missing())
	}
	assert.NotContains(t, body, `"k"`, "no key in any label")
	cancel()
	<-done
}

// --metrics-addr says which address it took (":0" picks a port), and
// warns when other hosts can reach it (checked without listening there:
// the tests listen on 127.0.0.1 only).
func TestMetricsAddrSaysWhereItListens(t *testing.T) {
	var errOut bytes.Buffer
	ms, err := serveMetrics("127.0.0.1:0", "dflock run", &errOut)
	require.NoError(t, err)
	ms.close()
	assert.Equal(t, "dflock run: metrics on http://"+ms.Addr()+"/metrics\n", errOut.String(), "no warning on loopback")
	for ip, open := range map[string]bool{"127.0.0.1": false, "::1": false, "0.0.0.0": true, "::": true, "10.1.2.3": true} {
		assert.Equal(t, open, openToOthers(&net.TCPAddr{IP: net.ParseIP(ip), Port: 9090}), ip)
	}
}
