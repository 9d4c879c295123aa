package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testcert"
	"github.com/dflock-go/dflock/lock"
)

// caFile writes the certificate of a testcert server config as a PEM
// file, for --tls-ca.
func caFile(t *testing.T, server *tls.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificates[0].Certificate[0]})
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return path
}

// dflockHint runs dflock with args and returns its exit code and the
// hint it gave ("" for none), checking that it gave at most one. It may
// run in a goroutine of the test: it does not stop the test.
func dflockHint(t *testing.T, ctx context.Context, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(ctx, args, env(nil), &out, &errOut)
	prefix := "dflock " + args[0] + ": hint: "
	var hints []string
	for l := range strings.Lines(errOut.String()) {
		if h, ok := strings.CutPrefix(strings.TrimSuffix(l, "\n"), prefix); ok {
			hints = append(hints, h)
		}
	}
	assert.LessOrEqual(t, len(hints), 1, errOut.String())
	if len(hints) == 0 {
		return code, ""
	}
	return code, hints[0]
}

// A hint names a cause only when it is what happened. A server killed
// during a wait closed the connection before answering anything, as a
// server at its connection limit or one that speaks TLS does; each of
// them gets its own hint, and a connection broken by a server that is
// still there, none.
func TestHintsNameTheCauseThatHappened(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("server killed during a wait", func(t *testing.T) {
		srv := startServer(t)
		holdKey(t, srv, "k")
		type result struct {
			code int
			hint string
		}
		done := make(chan result, 1)
		go func() {
			code, h := dflockHint(t, ctx, "run", "--servers", srv.Addr(), "--timeout", "30s", "k", "--", "true")
			done <- result{code, h}
		}()
		require.Eventually(t, func() bool {
			st := srv.Stats()
			return len(st.Locks) == 1 && st.Locks[0].Waiters == 1
		}, 10*time.Second, 5*time.Millisecond)
		srv.Close()
		r := <-done
		assert.Equal(t, 1, r.code)
		assert.Equal(t, "nothing listens at "+srv.Addr()+" now: the server stopped or restarted; is it running?", r.hint)
	})

	t.Run("server at its connection limit", func(t *testing.T) {
		srv, err := fakeserver.Start(fakeserver.Config{MaxConnections: 1})
		require.NoError(t, err)
		t.Cleanup(func() { srv.Close() })
		nc, err := net.Dial("tcp", srv.Addr())
		require.NoError(t, err)
		defer nc.Close()
		require.Eventually(t, func() bool { return srv.Stats().Connections == 1 }, 10*time.Second, 5*time.Millisecond)
		code, h := dflockHint(t, ctx, "stats", "--servers", srv.Addr())
		assert.Equal(t, 1, code)
		assert.Equal(t, srv.Addr()+" closes new connections as soon as it takes them: it is at its connection limit (raise its --max-connections, or run fewer clients)", h)
	})

	serverTLS, _ := testcert.New(t)
	t.Run("server speaks TLS", func(t *testing.T) {
		srv, err := fakeserver.Start(fakeserver.Config{TLS: serverTLS})
		require.NoError(t, err)
		t.Cleanup(func() { srv.Close() })
		code, h := dflockHint(t, ctx, "run", "--servers", srv.Addr(), "k", "--", "true")
		assert.Equal(t, 1, code)
		assert.Equal(t, srv.Addr()+" speaks TLS: pass --tls-ca FILE (or set DFLOCK_TLS_CA) with the CA that signed its certificate", h)
	})

	t.Run("server does not speak TLS", func(t *testing.T) {
		srv := startServer(t)
		code, h := dflockHint(t, ctx, "stats", "--servers", srv.Addr(), "--tls-ca", caFile(t, serverTLS))
		assert.Equal(t, 1, code)
		assert.Equal(t, srv.Addr()+" does not speak TLS: leave out --tls-ca (and DFLOCK_TLS_CA) for it", h)
	})

	t.Run("certificate of another CA", func(t *testing.T) {
		srv, err := fakeserver.Start(fakeserver.Config{TLS: serverTLS})
		require.NoError(t, err)
		t.Cleanup(func() { srv.Close() })
		other, _ := testcert.New(t)
		code, h := dflockHint(t, ctx, "stats", "--servers", srv.Addr(), "--tls-ca", caFile(t, other))
		assert.Equal(t, 1, code)
		assert.Equal(t, srv.Addr()+"'s certificate is not signed by the CA in --tls-ca (DFLOCK_TLS_CA): give the CA that signed it", h)
	})

	t.Run("nothing listening", func(t *testing.T) {
		srv := startServer(t)
		addr := srv.Addr()
		srv.Close()
		code, h := dflockHint(t, ctx, "stats", "--servers", addr)
		assert.Equal(t, 1, code)
		assert.Equal(t, "nothing listens at "+addr+": is the server running, and its address right in --servers (DFLOCK_SERVERS)?", h)
		fleet := filepath.Join(t.TempDir(), "fleet.json")
		require.NoError(t, os.WriteFile(fleet, []byte(`{"servers": ["`+addr+`"]}`), 0o600))
		_, h = dflockHint(t, ctx, "stats", "--fleet", fleet)
		assert.Equal(t, "nothing listens at "+addr+": is the server running, and its address right in the fleet file "+fleet+"?", h)
	})

	t.Run("no answer", func(t *testing.T) {
		srv := startServer(t)
		srv.Stall(time.Minute)
		code, h := dflockHint(t, ctx, "run", "--servers", srv.Addr(), "--timeout", "0", "k", "--", "true")
		assert.Equal(t, 1, code)
		assert.Equal(t, "no answer from "+srv.Addr()+" in time: is the server running, and not stopped or overloaded?", h)

		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		var out, errOut bytes.Buffer
		assert.Equal(t, 1, run(short, []string{"stats", "--servers", srv.Addr()}, env(nil), &out, &errOut))
		assert.Equal(t, "dflock stats: "+srv.Addr()+": no answer in time\n"+
			"dflock stats: stats failed on 1 of 1 servers\n"+
			"dflock stats: hint: no answer from "+srv.Addr()+" in time: is the server running, and not stopped or overloaded?\n", errOut.String())
	})

	t.Run("lock lost, server still there", func(t *testing.T) {
		srv := startServer(t)
		done := make(chan string, 1)
		go func() {
			_, h := dflockHint(t, ctx, "run", "--servers", srv.Addr(), "--grace", "100ms", "k", "--", "sleep", "30")
			done <- h
		}()
		require.Eventually(t, func() bool { return len(srv.Stats().Locks) == 1 }, 10*time.Second, 5*time.Millisecond)
		srv.DropConnections()
		assert.Empty(t, <-done, "a broken connection alone says nothing of why")
	})

	t.Run("serve on a port taken", func(t *testing.T) {
		srv := startServer(t)
		_, port, err := net.SplitHostPort(srv.Addr())
		require.NoError(t, err)
		code, h := dflockHint(t, ctx, "serve", "--port", port)
		assert.Equal(t, 1, code)
		assert.Equal(t, "something already listens at "+srv.Addr()+": pass another -port (or DFLOCKD_PORT), or stop it", h)
	})

	t.Run("refused, but answering now", func(t *testing.T) {
		srv := startServer(t)
		srv.RefuseConnections(true)
		c, err := lock.New(lock.Config{Servers: []string{srv.Addr()}})
		require.NoError(t, err)
		defer c.Close()
		refused := c.Stats(ctx)[0].Err
		require.ErrorIs(t, refused, lock.ErrRefused)
		assert.Contains(t, hint(refused, nil), "--max-connections", "while it refuses")
		srv.RefuseConnections(false)
		assert.Empty(t, hint(refused, nil), "once it takes connections again, the refusal has no cause to give")
	})
}
