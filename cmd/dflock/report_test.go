package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/bench"
	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/wire"
)

// libraryVoice matches what render must not leave in a message: a
// package's prefix where a message starts, or advice in Go terms.
var libraryVoice = regexp.MustCompile(`(^|: |\()(lock|pool|wire|shard|bench|dflockd): |Config\.|failure \d+ in a row`)

// The library's errors, as the commands meet them, come out in one
// voice: no package prefixes stacked, no advice for a Go caller, each
// thing said once, settings named by their flags.
func TestRenderSpeaksInOneVoice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := startServer(t)
	authed, err := fakeserver.Start(fakeserver.Config{AuthToken: "s3cret"})
	require.NoError(t, err)
	t.Cleanup(func() { authed.Close() })
	newClient := func(cfg lock.Config) *lock.Client {
		c, err := lock.New(cfg)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}

	// A lock lost with its connection.
	c := newClient(lock.Config{Servers: []string{srv.Addr()}})
	l := c.Lock("k")
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	srv.DropConnections()
	select {
	case <-l.Lost():
	case <-ctx.Done():
		t.Fatal("not lost")
	}
	lost := l.Err()

	// Refused for want of a token.
	_, noToken := newClient(lock.Config{Servers: []string{authed.Addr()}}).Lock("k").Acquire(ctx)
	require.Error(t, noToken)

	// Refused by a server that closes new connections.
	srv.RefuseConnections(true)
	refused := newClient(lock.Config{Servers: []string{srv.Addr()}}).Stats(ctx)[0].Err
	require.Error(t, refused)

	// A setting the library names by its field.
	_, replicas := lock.New(lock.Config{Servers: []string{srv.Addr()}, Replicas: 3})
	require.Error(t, replicas)

	addr := regexp.QuoteMeta(srv.Addr())
	for _, tc := range []struct {
		name string
		err  error
		want string // a regexp of the whole message
	}{
		{"lost", lost, `^lost: "k" on ` + addr + `: its connection broke: read: (EOF|.*connection reset by peer)$`},
		{"auth", noToken, `^lock "k" on ` + regexp.QuoteMeta(authed.Addr()) + `: the server requires an auth token, and none was sent or it did not match \(reply "error_auth" to l\)$`},
		{"refused", refused, `^` + addr + ` closed the connection before answering anything \((EOF|.*connection reset by peer)\)$`},
		{"replicas", replicas, `^--replicas 3 needs at least 3 servers; the fleet has 1$`},
		{"key", wire.CheckKey("bad key"), `^invalid key "bad key": must not contain a space$`},
		{"refused in a lock, backing off", fmt.Errorf(`lock: lock "k" on a:1: %w`,
			errors.New("pool: a:1 closed the connection before answering anything (EOF); it may be at its --max-connections limit, or expect TLS (failure 2 in a row; no new connection for 10ms)")),
			`^lock "k" on a:1: the server closed the connection before answering anything \(EOF\)$`},
		{"prefixes in a row", fmt.Errorf("lock: %w", errors.New(`pool: release of "k" on a:1: wire: line too long (it goes out when the connection can write)`)),
			`^release of "k" on a:1: line too long \(it goes out when the connection can write\)$`},
		{"workload", &bench.WorkloadError{Workload: "distinct", Succeeded: 0, Failed: 1, Errors: map[string]int64{"auth": 1}, Err: noToken},
			`^distinct failed: 1 of 1 operations failed \(auth:1\): lock "k" on \S+: the server requires an auth token`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := render(tc.err)
			assert.Regexp(t, tc.want, got)
			assert.NotRegexp(t, libraryVoice, got)
		})
	}
}
