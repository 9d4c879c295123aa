package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Every command reports a mistake on its command line (or in a variable
// that stands in for a flag) the same way: exit 2, the problem on one
// line under the command's prefix and no other, then, for a flag, the
// synopsis and where to find the help.
func TestEveryCommandReportsUsageErrorsAlike(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		vars     map[string]string
		want     string
		synopsis bool
	}{
		{args: []string{"bench", "--duration", "-1s"}, want: "--duration -1s: must be more than 0", synopsis: true},
		{args: []string{"bench", "--duration", "x"}, want: `invalid value "x" for flag -duration: parse error: not a duration (such as 500ms, 5s, 2m)`, synopsis: true},
		{args: []string{"bench", "--duration", "5"}, want: `invalid value "5" for flag -duration: a duration needs a unit: 5s, 5ms`, synopsis: true},
		{args: []string{"bench", "--warmup", "-1s"}, want: "--warmup -1s: must not be negative", synopsis: true},
		{args: []string{"bench", "--lease", "-2s"}, want: "--lease -2s: must not be negative", synopsis: true},
		{args: []string{"bench", "--workers", "-3"}, want: "--workers -3: at least 1", synopsis: true},
		{args: []string{"bench", "--keys", "0", "--hold", "-1"}, want: "--keys 0: at least 1; --hold -1: at least 1", synopsis: true},
		{args: []string{"bench", "--conns", "1"}, want: "--conns 1: at least 2 (a shared connection, and one for blocking requests)", synopsis: true},
		{args: []string{"bench", "--conns", "abc"}, want: `invalid value "abc" for flag -conns: not a whole number`, synopsis: true},
		{args: []string{"bench", "--json=maybe"}, want: `invalid boolean value "maybe" for -json: not true or false`, synopsis: true},
		{args: []string{"bench", "--replicas", "1,2"}, want: `invalid value "1,2" for flag -replicas: 2: replica counts are odd numbers (1, 3, 5...)`, synopsis: true},
		{args: []string{"bench", "--meters", "sdk,bogus"}, want: `invalid value "sdk,bogus" for flag -meters: "bogus" is not a metrics setting (off, global, sdk)`, synopsis: true},
		{args: []string{"bench", "--strategy", "magic"}, want: `--strategy "magic": one of stable, consistent, rendezvous`, synopsis: true},
		{args: []string{"bench", "--workloads", "raw,nope"}, want: `--workloads: no workload "nope" (there are raw,distinct,hot,zipf,two-phase,semaphore,try-many,lock-all,hold-many)`, synopsis: true},
		{args: []string{"bench", "extra"}, want: "unexpected arguments: extra", synopsis: true},
		{args: []string{"bench", "--bogus"}, want: "flag provided but not defined: -bogus", synopsis: true},
		{args: []string{"bench"}, vars: map[string]string{"DFLOCK_REPLICAS": "x"}, want: `DFLOCK_REPLICAS="x": x: replica counts are odd numbers (1, 3, 5...)`},

		{args: []string{"serve", "--port", "abc"}, want: `invalid value "abc" for flag -port: not a whole number`, synopsis: true},
		{args: []string{"serve", "--port", "99999"}, want: "-port must be 0-65535, got 99999", synopsis: true},
		{args: []string{"serve", "--max-locks", "0"}, want: "-max-locks must be at least 1, got 0", synopsis: true},
		{args: []string{"serve", "--tls-cert", "c.pem"}, want: "-tls-cert and -tls-key go together"},
		{args: []string{"serve", "extra"}, want: "unexpected arguments: extra", synopsis: true},
		{args: []string{"serve"}, vars: map[string]string{"DFLOCKD_MAX_LOCKS": "lots"}, want: `DFLOCKD_MAX_LOCKS="lots": not a valid value for -max-locks`},

		{args: []string{"stats", "extra"}, want: "unexpected arguments: extra", synopsis: true},
		{args: []string{"stats", "--server-read-timeout", "0s"}, want: `invalid value "0s" for flag -server-read-timeout: must be at least 1s, got 0s`, synopsis: true},
		{args: []string{"stats", "--servers", "a:1,a:1"}, want: `server "a:1" appears twice`},
		{args: []string{"stats", "--fleet", "f.json", "--servers", "a:1"}, want: "--servers and a fleet file (--fleet, DFLOCK_FLEET) both name the servers: give one", synopsis: true},
		{args: []string{"stats"}, vars: map[string]string{"DFLOCK_SERVER_READ_TIMEOUT": "soon"}, want: `DFLOCK_SERVER_READ_TIMEOUT="soon": not a duration: "soon"`},

		{args: []string{"where"}, want: "no keys given", synopsis: true},
		{args: []string{"where", "--replicas", "2", "k"}, want: "--replicas 2: an odd number of servers (1, 3, 5...), as clients take", synopsis: true},
		{args: []string{"where", "--", "bad key"}, want: `invalid key "bad key": must not contain a space`},

		{args: []string{"run", "--timeout", "-1s", "k", "--", "true"}, want: "--timeout -1s must not be negative", synopsis: true},
		{args: []string{"run", "-n", "x", "k", "--", "true"}, want: `invalid value "x" for flag -n: not a whole number`, synopsis: true},
		{args: []string{"run", "k", "--", "true"}, vars: map[string]string{"DFLOCK_REPLICAS": "x"}, want: `DFLOCK_REPLICAS="x": not a number`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// Cancelled: a case that wrongly passed would end at once
			// rather than serve or run.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var out, errOut bytes.Buffer
			code := run(ctx, tc.args, env(tc.vars), &out, &errOut)
			assert.Equal(t, 2, code, errOut.String())
			assert.Empty(t, out.String())
			prefix := "dflock " + tc.args[0] + ": "
			lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")
			assert.Equal(t, prefix+tc.want, lines[0])
			assert.Equal(t, 1, strings.Count(errOut.String(), "dflock "+tc.args[0]+":"), "one prefix: %s", errOut.String())
			if !tc.synopsis {
				assert.Len(t, lines, 1, errOut.String())
				return
			}
			assert.GreaterOrEqual(t, len(lines), 3, errOut.String())
			assert.True(t, strings.HasPrefix(lines[1], "usage: dflock "+tc.args[0]+" "), lines[1])
			assert.Equal(t, "(dflock "+tc.args[0]+" -h for help)", lines[len(lines)-1])
		})
	}
}
