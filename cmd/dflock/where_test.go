package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/shard"
)

func where(t *testing.T, vars map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"where"}, args...), env(vars), &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestWhere(t *testing.T) {
	// The PROTOCOL.md vectors: my-key % 3 == 2, a % 3 == 0, lock-1 % 3 == 1.
	out, errOut, code := where(t, nil, "my-key", "--servers", "s0:1,s1:1,s2:1", "a", "lock-1")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "my-key  s2:1\na       s0:1\nlock-1  s1:1\n", out)

	out, _, code = where(t, map[string]string{"DFLOCK_SERVERS": "x:1, y:1"}, "foo")
	require.Equal(t, 0, code)
	assert.Equal(t, "foo  y:1\n", out, "crc32(foo) % 2 == 1; servers from the environment")

	out, _, code = where(t, nil, "orders/1")
	require.Equal(t, 0, code)
	assert.Equal(t, "orders/1  127.0.0.1:6388\n", out)

	for _, strategy := range []string{"consistent", "rendezvous"} {
		out, errOut, code = where(t, nil, "--strategy", strategy, "--servers", "a:1,b:1,c:1", "k1", "k2", "--", "-dash-key")
		require.Equal(t, 0, code, errOut)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 3)
		assert.True(t, strings.HasPrefix(lines[2], "-dash-key"))
	}
}

func TestWhereErrors(t *testing.T) {
	_, errOut, code := where(t, nil)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "usage")
	_, errOut, code = where(t, nil, "k", "--strategy", "magic")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `dflock where: --strategy "magic": one of stable, consistent, rendezvous`)
	_, errOut, code = where(t, nil, "k", "--servers", "a:1,a:1")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `dflock where: server "a:1" appears twice`)
	_, errOut, code = where(t, nil, "k", "--servers", " , ")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "dflock where: no servers given")
	_, errOut, code = where(t, nil, "--", "bad key")
	assert.Equal(t, 2, code, "bad input is a usage error")
	assert.Contains(t, errOut, "must not contain a space")
}

func TestWhereTakesEveryArgumentAfterDoubleDashAsAKey(t *testing.T) {
	out, errOut, code := where(t, nil, "--servers", "a:1", "--", "k1", "-abc", "k2")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "k1    a:1\n-abc  a:1\nk2    a:1\n", out)
}

func TestEveryCommandChecksServerAddresses(t *testing.T) {
	for _, servers := range []string{"127.0.0.1:notaport", "a b", "a b:1", "h:0", "h:70000", "h:+1", "nohost"} {
		for _, cmd := range [][]string{{"where", "k"}, {"stats"}, {"run", "k", "--", "true"}} {
			var out, errOut bytes.Buffer
			args := append([]string{cmd[0], "--servers", servers}, cmd[1:]...)
			code := run(context.Background(), args, env(nil), &out, &errOut)
			assert.NotEqual(t, 0, code, "%v", args)
			assert.Contains(t, errOut.String(), "dflock "+cmd[0]+": server address", "%v", args)
		}
	}
}

func TestHelpExitsZeroAndErrorsNameTheCommand(t *testing.T) {
	for cmd, flagName := range map[string]string{"serve": "-max-locks", "bench": "-servers", "where": "-servers", "run": "-servers", "stats": "-servers"} {
		var out, errOut bytes.Buffer
		assert.Equal(t, 0, run(context.Background(), []string{cmd, "-h"}, env(nil), &out, &errOut), cmd)
		assert.Contains(t, out.String(), flagName, "help goes to stdout: %s", cmd)
	}
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run(context.Background(), []string{"stats", "extra"}, env(nil), &out, &errOut))
	assert.Contains(t, errOut.String(), "unexpected arguments: extra")
}

func TestWhereReplicas(t *testing.T) {
	out, errOut, code := where(t, nil, "my-key", "a", "--servers", "s0:1,s1:1,s2:1", "--replicas", "3")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "my-key  s2:1  s0:1  s1:1\na       s0:1  s1:1  s2:1\n", out, "the primary, then the list order")
	for _, strategy := range []string{"consistent", "rendezvous"} {
		out, errOut, code = where(t, nil, "k", "--strategy", strategy, "--servers", "a:1,b:1,c:1", "--replicas", "3")
		require.Equal(t, 0, code, errOut)
		assert.Len(t, strings.Fields(out), 4, strategy)
	}
	_, errOut, code = where(t, nil, "k", "--servers", "a:1,b:1", "--replicas", "3")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--replicas 3 needs at least 3 servers; --servers lists 2")
	_, errOut, code = where(t, nil, "k", "--servers", "a:1,b:1", "--replicas", "2")
	assert.Equal(t, 2, code, "clients take odd counts only")
	assert.Contains(t, errOut, "--replicas 2: an odd number")
	_, errOut, code = where(t, map[string]string{"DFLOCK_REPLICAS": "abc"}, "k", "--servers", "a:1")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `DFLOCK_REPLICAS="abc"`)
}

func TestWherePlan(t *testing.T) {
	keys := []string{"my-key", "a", "lock-1", "orders/42", "k5", "k6"}
	from, to := "s0:1,s1:1,s2:1", "s0:1,s1:1,s2:1,s3:1"
	for _, strategy := range []string{"stable", "consistent", "rendezvous"} {
		args := append([]string{"--plan", "--from", from, "--to", to, "--strategy", strategy}, keys...)
		out, errOut, code := where(t, nil, args...)
		require.Equal(t, 0, code, errOut)
		before, err := shard.ByName(strategy, strings.Split(from, ","))
		require.NoError(t, err)
		after, err := shard.ByName(strategy, strings.Split(to, ","))
		require.NoError(t, err)
		moves, err := shard.Moves(keys, before, after)
		require.NoError(t, err)
		var want string
		for _, m := range moves {
			want += m.Key + " " + m.From + " -> " + m.To + "\n"
		}
		var got string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line != "" {
				got += strings.Join(strings.Fields(line), " ") + "\n"
			}
		}
		assert.Equal(t, want, got, strategy)
		assert.Contains(t, errOut, fmt.Sprintf("%d of %d keys move", len(moves), len(keys)), strategy)
	}

	out, _, code := where(t, nil, "--plan", "--from", from, "--to", to, "--replicas", "3", "my-key")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "s3:1", "a key whose replica set changes lists the new server")

	_, errOut, code := where(t, nil, "--plan", "--from", from, "k")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--plan needs --from and --to")
	_, errOut, code = where(t, nil, "--to", to, "k")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--from and --to go with --plan")
	_, errOut, code = where(t, nil, "--plan", "--from", "a:1,b:1", "--to", to, "--replicas", "3", "k")
	assert.Equal(t, 2, code, "more replicas than the old fleet has")
	assert.Contains(t, errOut, "--replicas 3 needs at least 3 servers; the servers before (--from) lists 2")
}

func TestWhereFleetFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"strategy": "rendezvous", "servers": ["s0:1","s1:1","s2:1","s3:1"], "previous": ["s0:1","s1:1","s2:1"]}`), 0o600))
	keys := []string{"my-key", "a", "lock-1", "orders/42", "k5", "k6"}
	byFile, errFile, code := where(t, nil, append([]string{"--plan", "--fleet", path}, keys...)...)
	require.Equal(t, 0, code, errFile)
	byFlags, errFlags, code := where(t, nil, append([]string{"--plan", "--from", "s0:1,s1:1,s2:1", "--to", "s0:1,s1:1,s2:1,s3:1", "--strategy", "rendezvous"}, keys...)...)
	require.Equal(t, 0, code)
	assert.Equal(t, byFlags, byFile)
	assert.Equal(t, errFlags, errFile)
	out, _, code := where(t, nil, "--fleet", path, "my-key")
	require.Equal(t, 0, code)
	want, _, _ := where(t, nil, "--servers", "s0:1,s1:1,s2:1,s3:1", "--strategy", "rendezvous", "my-key")
	assert.Equal(t, want, out)

	_, errOut, code := where(t, nil, "--fleet", path, "--servers", "a:1", "k")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--fleet gives the servers and the strategy: leave out --servers")
	require.NoError(t, os.WriteFile(path, []byte(`{"servers": ["s0:1"]}`), 0o600))
	_, errOut, code = where(t, nil, "--plan", "--fleet", path, "k")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "names no previous servers")
}
