package bench_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/bench"
	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testproxy"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

func startFake(t *testing.T, cfg fakeserver.Config) *fakeserver.Server {
	t.Helper()
	srv, err := fakeserver.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return srv
}

// quick is a run short enough for a test; the tests below set Servers
// and Workloads.
var quick = bench.Config{Duration: 100 * time.Millisecond, Warmup: time.Millisecond, Workers: 4, Pool: pool.Config{MaxConns: 2}, HoldMany: 100}

func TestMaxLocksStopsTheRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startFake(t, fakeserver.Config{MaxLocks: 8})
	cfg := quick
	cfg.Servers, cfg.Workloads = []string{srv.Addr()}, []string{"distinct", "hot"}
	// 4 workers take 64 keys each; the server tracks 8.
	rep, err := bench.Run(ctx, cfg)
	require.Error(t, err)
	assert.ErrorIs(t, err, lock.ErrMaxLocks)
	var we *bench.WorkloadError
	require.ErrorAs(t, err, &we)
	assert.Equal(t, "distinct", we.Workload)
	assert.Greater(t, we.Failed, we.Succeeded)
	assert.Equal(t, we.Failed, we.Errors["max_locks"])
	assert.Contains(t, err.Error(), "distinct failed: ")

	require.NotNil(t, rep)
	assert.Equal(t, "distinct", rep.Failed)
	require.Len(t, rep.Results, 1, "hot did not run")
	assert.Equal(t, we.Errors, rep.Results[0].Errors)
	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), "RUN STOPPED at distinct")
}

// A workload whose every operation fails is slowed by the workers'
// backoff: each waits 1, 2, 4, ... up to 64 ms between failures, so in
// 300 ms a worker makes at most about 10 attempts, where a tight loop
// makes thousands.
func TestFailuresBackOff(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startFake(t, fakeserver.Config{MaxLocks: 1})
	// The server's one key is taken, so every new key is refused.
	c, err := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	require.NoError(t, err)
	defer c.Close()
	ok, err := c.Lock("squatter").Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	p := testproxy.Start(t, srv.Addr(), nil)
	cfg := quick
	cfg.Servers, cfg.Workloads, cfg.Duration = []string{p.Addr()}, []string{"distinct"}, 300*time.Millisecond
	rep, err := bench.Run(ctx, cfg)
	assert.ErrorIs(t, err, lock.ErrMaxLocks)
	require.Len(t, rep.Results, 1)
	assert.Zero(t, rep.Results[0].Ops)
	// 1+2+...+32 ms is 63 ms for the first 6 waits, then one per 64 ms:
	// at most 6 + 4 + 1 attempts a worker in 301 ms, however slow the
	// machine (a slow one makes fewer).
	const perWorker = 11
	assert.LessOrEqual(t, p.Requests(), int64(cfg.Workers*perWorker))
	assert.Positive(t, p.Requests())
}

func TestHoldManyStopsWhenMostlyFailing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startFake(t, fakeserver.Config{MaxLocks: 16})
	cfg := quick
	cfg.Servers, cfg.Workloads, cfg.HoldMany = []string{srv.Addr()}, []string{"hold-many"}, 100_000
	rep, err := bench.Run(ctx, cfg)
	assert.ErrorIs(t, err, lock.ErrMaxLocks)
	var we *bench.WorkloadError
	require.ErrorAs(t, err, &we)
	assert.Equal(t, int64(16), we.Succeeded)
	// It gives up once 32 acquires failed and failures outnumber
	// successes, give or take the acquires in flight then: it does not
	// try 100,000 keys.
	assert.Less(t, we.Failed, int64(32+cfg.Workers))
	assert.Equal(t, "hold-many", rep.Failed)
}

// Without the token a server asks for, the run stops at the first
// refusal instead of reconnecting for the whole duration.
func TestAuthRefusalStopsAtOnce(t *testing.T) {
	t.Parallel()
	srv := startFake(t, fakeserver.Config{AuthToken: "s3cret", MaxLocks: -1})
	for _, workload := range []string{"raw", "distinct", "two-phase", "hold-many"} {
		t.Run(workload, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p := testproxy.Start(t, srv.Addr(), nil)
			cfg := quick
			// Long enough that a harness that went on retrying would
			// show it in the count.
			cfg.Servers, cfg.Workloads, cfg.Duration, cfg.Workers = []string{p.Addr()}, []string{workload}, 3*time.Second, 8
			rep, err := bench.Run(ctx, cfg)
			require.Error(t, err)
			assert.ErrorIs(t, err, lock.ErrAuth)
			assert.Equal(t, workload, rep.Failed)
			require.Len(t, rep.Results, 1)
			res := rep.Results[0]
			assert.Zero(t, res.Ops)
			assert.Positive(t, res.Errors["auth"])
			for _, d := range []time.Duration{res.Mean, res.P50, res.P90, res.P99, res.P999, res.Max} {
				assert.Zero(t, d, "no latency was measured")
			}
			// At most one connection a worker and a pool's shared ones
			// were opened before the first refusal stopped them.
			assert.LessOrEqual(t, p.Accepts(), int64(cfg.Workers+cfg.Pool.MaxConns))

			var table bytes.Buffer
			require.NoError(t, rep.WriteTable(&table))
			row := strings.Fields(strings.Split(table.String(), "\n")[3])
			require.Len(t, row, 12, table.String())
			assert.Equal(t, []string{workload, "0", "-", "-", "-", "-", "-", "-", "-", "-", "-"}, row[:11], "unmeasured figures read -")
		})
	}
}

func TestInterruptedRunLeavesOutTheCutWorkload(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startFake(t, fakeserver.Config{MaxLocks: -1})
	// Interrupt as soon as the second workload sends its first request.
	interrupt, stop := context.WithCancel(ctx)
	defer stop()
	p := testproxy.Start(t, srv.Addr(), func(_ int64, b []byte) {
		if bytes.Contains(b, []byte("\nhot-")) {
			stop()
		}
	})
	cfg := quick
	cfg.Servers, cfg.Workloads = []string{p.Addr()}, []string{"distinct", "hot", "zipf"}
	rep, err := bench.Run(interrupt, cfg)
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "interrupted during hot")
	assert.Empty(t, rep.Failed)
	assert.Equal(t, "hot", rep.Interrupted)
	require.Len(t, rep.Results, 1)
	assert.Equal(t, "distinct", rep.Results[0].Name)
	assert.Positive(t, rep.Results[0].Ops)
	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), "RUN INTERRUPTED during hot")
	assert.NotContains(t, table.String(), "hot: one op")
}

func TestLeaseAppliesToHoldMany(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startFake(t, fakeserver.Config{MaxLocks: -1})
	var mu sync.Mutex
	sent := map[int64]*bytes.Buffer{} // by connection
	p := testproxy.Start(t, srv.Addr(), func(conn int64, b []byte) {
		mu.Lock()
		defer mu.Unlock()
		if sent[conn] == nil {
			sent[conn] = &bytes.Buffer{}
		}
		sent[conn].Write(b)
	})
	for _, tc := range []struct {
		lease time.Duration
		want  string
	}{
		{0, "1"}, // half the 100 ms duration, at least 1 s
		{7 * time.Second, "7"},
	} {
		cfg := quick
		cfg.Servers, cfg.Workloads, cfg.HoldMany, cfg.Lease = []string{p.Addr()}, []string{"hold-many"}, 10, tc.lease
		rep, err := bench.Run(ctx, cfg)
		require.NoError(t, err)
		assert.Contains(t, rep.Results[0].Op, "with a "+tc.want+"s lease")
		mu.Lock()
		// An acquire is "l", the key, then "TIMEOUT LEASE".
		acquire := regexp.MustCompile(`(?:^|\n)l\nhold-0\n[0-9]+ ` + tc.want + `\n`)
		found := false
		for _, b := range sent {
			found = found || acquire.Match(b.Bytes())
		}
		assert.True(t, found, "no acquire of hold-0 with a %ss lease", tc.want)
		clear(sent)
		mu.Unlock()
	}
}

func TestWorkloadErrorMessage(t *testing.T) {
	err := &bench.WorkloadError{Workload: "zipf", Succeeded: 3, Failed: 5, Errors: map[string]int64{"max_locks": 5}, Err: lock.ErrMaxLocks}
	assert.Equal(t, "bench: zipf failed: 5 of 8 operations failed (max_locks:5): "+lock.ErrMaxLocks.Error(), err.Error())
	assert.True(t, errors.Is(err, lock.ErrMaxLocks))
	none := &bench.WorkloadError{Workload: "hot"}
	assert.Equal(t, "bench: hot failed: no operation completed", none.Error())
}
