package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/bench"
	"github.com/dflock-go/dflock/fakeserver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunEveryWorkload(t *testing.T) {
	rep, err := bench.Run(context.Background(), bench.Config{
		Duration: 150 * time.Millisecond, Warmup: 20 * time.Millisecond, Workers: 8, HoldMany: 200, Keys: 100,
	})
	require.NoError(t, err)
	assert.True(t, rep.Embedded)
	require.Len(t, rep.Servers, 3)
	require.Len(t, rep.Results, len(bench.Workloads()))
	for i, res := range rep.Results {
		assert.Equal(t, bench.Workloads()[i], res.Name)
		assert.Positive(t, res.Ops, res.Name)
		assert.Positive(t, res.PerSecond, res.Name)
		assert.Empty(t, res.Errors, res.Name)
		assert.LessOrEqual(t, res.P50, res.P99, res.Name)
		assert.LessOrEqual(t, res.P99, res.Max, res.Name)
		switch res.Name {
		case "raw", "hold-many":
			assert.Zero(t, res.VsRaw, res.Name)
		default:
			assert.Positive(t, res.VsRaw, res.Name)
		}
	}
	hold := rep.Results[len(rep.Results)-1]
	assert.Equal(t, 0.0, hold.Extra["lost"])
	assert.Equal(t, 200.0, hold.Extra["held at end"])

	var table, js bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), "p99.9")
	assert.Contains(t, table.String(), "hold-many: one op = ")
	require.NoError(t, rep.WriteJSON(&js))
	var back bench.Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	assert.Equal(t, rep.Results[1].Ops, back.Results[1].Ops)
}

func TestRunAgainstGivenServers(t *testing.T) {
	srv, err := fakeserver.Start(fakeserver.Config{MaxLocks: -1})
	require.NoError(t, err)
	defer srv.Close()
	rep, err := bench.Run(context.Background(), bench.Config{
		Servers: []string{srv.Addr()}, Strategy: "rendezvous", Workloads: []string{"distinct", "semaphore"},
		Duration: 100 * time.Millisecond, Warmup: time.Millisecond, Workers: 4,
	})
	require.NoError(t, err)
	assert.False(t, rep.Embedded)
	assert.Equal(t, []string{srv.Addr()}, rep.Servers)
	assert.Len(t, rep.Results, 2)
	assert.Zero(t, rep.Results[0].VsRaw, "no baseline ran")
}

func TestCountsErrorsByKind(t *testing.T) {
	srv, err := fakeserver.Start(fakeserver.Config{MaxLocks: 10})
	require.NoError(t, err)
	defer srv.Close()
	rep, err := bench.Run(context.Background(), bench.Config{
		Servers: []string{srv.Addr()}, Workloads: []string{"zipf"}, Keys: 1000,
		Duration: 200 * time.Millisecond, Warmup: time.Millisecond, Workers: 4,
	})
	require.NoError(t, err)
	assert.Positive(t, rep.Results[0].Errors["max_locks"], "a 10-key server refuses most of 1,000 keys")
}

func TestConfigErrors(t *testing.T) {
	_, err := bench.Run(context.Background(), bench.Config{Workloads: []string{"nope"}})
	assert.ErrorContains(t, err, "unknown workload")
	_, err = bench.Run(context.Background(), bench.Config{Strategy: "magic", Workloads: []string{"distinct"}, Duration: time.Millisecond})
	assert.ErrorContains(t, err, "unknown strategy")
}
