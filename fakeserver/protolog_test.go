package fakeserver_test

import (
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testlog"
)

// warnings returns the WARN lines logged so far.
func warnings(logs *testlog.Buffer) []string {
	var out []string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "level=WARN") {
			out = append(out, strings.TrimSuffix(l, "\n"))
		}
	}
	return out
}

// counted returns the count each summary line of lines gives, by kind.
func counted(lines []string) map[string]int {
	re := regexp.MustCompile(`msg="more protocol errors of this kind" kind="([^"]+)" count=(\d+) within=10s$`)
	out := map[string]int{}
	for _, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[2])
			out[m[1]] += n
		}
	}
	return out
}

// A flood of protocol errors writes the first of each kind, then one
// count per kind per interval, not a line per error; the counts add up
// to the errors not logged.
func TestProtocolErrorLogIsThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs testlog.Buffer
		srv := start(t, fakeserver.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})

		flood := func(badRequests, longLines int) {
			c := dial(t, srv)
			for range badRequests {
				assert.Equal(t, "error", c.do("bogus", "k", "0"))
			}
			// Closed, or it would time out as the clock moves on.
			c.nc.Close()
			for range longLines {
				c := dial(t, srv)
				c.write(strings.Repeat("x", 300) + "\n")
				assert.Equal(t, "error", c.read())
				c.expectClosed()
			}
		}

		flood(1000, 200)
		synctest.Wait()
		lines := warnings(&logs)
		require.Len(t, lines, 2, "the first of each kind: %q", lines)
		assert.Regexp(t, `msg="protocol error" conn_id=1 peer=\S+ err="fakeserver: bad request: unknown command"$`, lines[0], "the whole line names the sender")
		assert.Regexp(t, `msg="protocol error, closing" conn_id=2 peer=\S+ err="fakeserver: line too long"$`, lines[1])

		// The interval ends: one count per kind, of the errors not logged.
		time.Sleep(fakeserver.ProtocolLogInterval)
		synctest.Wait()
		lines = warnings(&logs)
		require.Len(t, lines, 4, "%q", lines)
		assert.Equal(t, map[string]int{"bad request: unknown command": 999, "line too long": 199}, counted(lines[2:]))

		// A quiet interval logs nothing.
		time.Sleep(fakeserver.ProtocolLogInterval)
		synctest.Wait()
		assert.Len(t, warnings(&logs), 4)

		// A flood in a later interval logs its first again, with its
		// sender, and its own count.
		flood(500, 0)
		time.Sleep(fakeserver.ProtocolLogInterval)
		synctest.Wait()
		lines = warnings(&logs)
		require.Len(t, lines, 6, "%q", lines)
		assert.Regexp(t, `msg="protocol error" conn_id=202 .* err="fakeserver: bad request: unknown command"$`, lines[4])
		assert.Equal(t, map[string]int{"bad request: unknown command": 499}, counted(lines[5:]))
	})
}

// Authentication failures and read timeouts are kinds of their own, and
// what was counted when the server stops is logged as it stops.
func TestProtocolErrorLogCountsUntilTheEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs testlog.Buffer
		srv := start(t, fakeserver.Config{AuthToken: "s3cret", ReadTimeout: time.Second,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		for range 50 {
			c := dial(t, srv)
			assert.Equal(t, "error_auth", c.do("auth", "_", "wrong"))
		}
		// Then silence, past the read timeout, on connections that all
		// time out together.
		var silent []*client
		for range 30 {
			c := dial(t, srv)
			assert.Equal(t, "ok", c.do("auth", "_", "s3cret"))
			silent = append(silent, c)
		}
		for _, c := range silent {
			assert.Equal(t, "error", c.read())
		}
		synctest.Wait()
		lines := warnings(&logs)
		require.Len(t, lines, 2, "%q", lines)
		assert.Contains(t, lines[0], `msg="authentication failed"`)
		assert.Contains(t, lines[1], `msg="protocol error, closing"`)

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, srv.Shutdown(ctx))
		lines = warnings(&logs)
		assert.Len(t, lines, 4, "%q", lines)
		assert.Equal(t, map[string]int{"authentication failed": 49, "read timeout": 29}, counted(lines[2:]))
	})
}
