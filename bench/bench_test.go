package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/bench"
	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
)

func TestMain(m *testing.M) {
	bench.ServeFleetIfAsked() // started by fleetInChild: be the fleet
	goleak.VerifyTestMain(m)
}

// fleetInChild runs the embedded fleet in this test binary started again,
// as dflock bench does with the dflock binary.
func fleetInChild() *exec.Cmd {
	// Should TestMain ever miss FleetEnv, run no tests rather than all.
	return exec.Command(os.Args[0], "-test.run=^$")
}

// shortRun is a run of every workload that takes about a second.
var shortRun = bench.Config{Duration: 150 * time.Millisecond, Warmup: 20 * time.Millisecond, Workers: 8, HoldMany: 200, Keys: 100}

func TestRunEveryWorkload(t *testing.T) {
	rep, err := bench.Run(context.Background(), shortRun)
	require.NoError(t, err)
	assert.True(t, rep.Embedded)
	assert.True(t, rep.ServersInProcess)
	require.Len(t, rep.Servers, 3)
	require.Len(t, rep.Results, len(bench.Workloads()))
	for i, res := range rep.Results {
		assert.Equal(t, bench.Workloads()[i], res.Name)
		assert.Positive(t, res.Ops, res.Name)
		assert.Positive(t, res.PerSecond, res.Name)
		assert.Empty(t, res.Errors, res.Name)
		assert.LessOrEqual(t, res.P50, res.P99, res.Name)
		assert.LessOrEqual(t, res.P99, res.Max, res.Name)
		assert.Positive(t, res.CPUPerOp, res.Name)
		switch res.Name {
		case "raw", "hold-many":
			assert.Zero(t, res.VsRaw, res.Name)
		case "try-many", "lock-all":
			assert.Zero(t, res.VsRaw, res.Name, "an op takes many keys")
			assert.Greater(t, res.Extra["keys/s"], res.PerSecond, res.Name)
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
	assert.Contains(t, table.String(), "cpu/op*", "the column says it counts the servers")
	assert.Contains(t, table.String(), "INCLUDING the embedded servers'")
	require.NoError(t, rep.WriteJSON(&js))
	var back bench.Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	assert.Equal(t, rep.Results[1].Ops, back.Results[1].Ops)
}

func TestCPUPerOpWithFleetInChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := shortRun
	cfg.FleetCommand = fleetInChild
	rep, err := bench.Run(ctx, cfg)
	require.NoError(t, err)
	assert.True(t, rep.Embedded)
	assert.False(t, rep.ServersInProcess)
	require.Len(t, rep.Servers, 3)
	require.Len(t, rep.Results, len(bench.Workloads()))
	for _, res := range rep.Results {
		assert.Positive(t, res.Ops, res.Name)
		assert.Empty(t, res.Errors, res.Name)
		assert.Positive(t, res.CPUPerOp, res.Name)
		assert.Less(t, res.CPUPerOp, time.Second, res.Name)
	}
	// The servers' heap is elsewhere, so the client's per lock is known.
	assert.Positive(t, rep.Results[len(rep.Results)-1].Extra["client heap B/lock"])

	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	lines := strings.Split(table.String(), "\n")
	require.Greater(t, len(lines), 3+len(rep.Results))
	header := []rune(lines[2])
	// The table aligns right, so every cell of a column ends where its
	// heading does.
	end := strings.Index(lines[2], " cpu/op ")
	require.NotEqual(t, -1, end, "no cpu/op column in %q", lines[2])
	end = len([]rune(lines[2][:end])) + len(" cpu/op")
	for i, res := range rep.Results {
		row := []rune(lines[3+i])
		require.Len(t, row, len(header), "row %q", lines[3+i])
		cells := strings.Fields(string(row[:end]))
		assert.Equal(t, res.Name, cells[0])
		assert.Regexp(t, `^[0-9.]+(ns|µs|ms|s)$`, cells[len(cells)-1], res.Name)
	}
	assert.Contains(t, table.String(), "in a child process")
	assert.NotContains(t, table.String(), "cpu/op*")

	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var back struct {
		ServersInProcess bool `json:"servers_in_process"`
		Results          []struct {
			Name     string `json:"name"`
			CPUPerOp int64  `json:"cpu_per_op_ns"`
		} `json:"results"`
	}
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	assert.False(t, back.ServersInProcess)
	for i, res := range back.Results {
		assert.Equal(t, rep.Results[i].CPUPerOp.Nanoseconds(), res.CPUPerOp, res.Name)
	}
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
	// A 10-key server refuses most of 1,000 keys: the workload fails,
	// and its figures say how.
	require.ErrorIs(t, err, lock.ErrMaxLocks)
	require.Len(t, rep.Results, 1)
	assert.Positive(t, rep.Results[0].Errors["max_locks"])
}

// --replicas 1,3 measures every workload but raw at both replica counts,
// side by side, and R=3 asks three times the requests of R=1.
func TestReplicasSideBySide(t *testing.T) {
	cfg := shortRun
	cfg.Workloads, cfg.Replicas = []string{"raw", "distinct", "hold-many"}, []int{1, 3}
	rep, err := bench.Run(context.Background(), cfg)
	require.NoError(t, err)
	var names []string
	for _, res := range rep.Results {
		names = append(names, res.Name)
		assert.Empty(t, res.Errors, res.Name)
		assert.LessOrEqual(t, res.P50, res.Max, res.Name)
		assert.Positive(t, res.Mean, res.Name)
	}
	require.Equal(t, []string{"raw", "distinct/r1", "distinct/r3", "hold-many/r1", "hold-many/r3"}, names)
	r1, r3 := rep.Results[1].ReqPerOp, rep.Results[2].ReqPerOp
	assert.InDelta(t, 2, r1, 0.1, "a try-lock and a release")
	assert.InDelta(t, 3*r1, r3, 0.3, "the same on each of 3 replicas")
	assert.Equal(t, 200.0, rep.Results[4].Extra["held at end"])
	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), "req/op")

	cfg.Replicas = []int{2}
	_, err = bench.Run(context.Background(), cfg)
	assert.ErrorContains(t, err, "replicas 2")
}

func TestConfigErrors(t *testing.T) {
	_, err := bench.Run(context.Background(), bench.Config{Workloads: []string{"nope"}})
	assert.ErrorContains(t, err, "unknown workload")
	_, err = bench.Run(context.Background(), bench.Config{Strategy: "magic", Workloads: []string{"distinct"}, Duration: time.Millisecond})
	assert.ErrorContains(t, err, "unknown strategy")
}

func TestReshard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := shortRun
	cfg.Reshard, cfg.ReshardStrategies, cfg.ReshardHeld, cfg.Keys = true, []string{"rendezvous", "stable"}, 300, 1000
	cfg.FleetCommand = fleetInChild
	rep, err := bench.Run(ctx, cfg)
	require.NoError(t, err)
	require.Len(t, rep.Servers, 4, "the fleet grows to 4")
	var names []string
	for _, res := range rep.Results {
		names = append(names, res.Name)
		assert.Positive(t, res.Ops, res.Name)
		assert.Empty(t, res.Errors, res.Name)
		assert.Positive(t, res.ReqPerOp, res.Name)
		switch {
		case strings.HasSuffix(res.Name, "during"):
			assert.Positive(t, res.Extra["held locks moved"], res.Name)
			assert.Positive(t, res.Extra["extra requests %"], "%s: moving keys are taken twice", res.Name)
		case strings.HasSuffix(res.Name, "after"):
			assert.Equal(t, 0.0, res.Extra["lost"], res.Name)
		}
	}
	assert.Equal(t, []string{
		"rendezvous 3→4 before", "rendezvous 3→4 during", "rendezvous 3→4 after",
		"rendezvous 4→3 before", "rendezvous 4→3 during", "rendezvous 4→3 after",
		"stable 3→4 before", "stable 3→4 during", "stable 3→4 after",
		"stable 4→3 before", "stable 4→3 during", "stable 4→3 after",
	}, names)
	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), "rendezvous 3→4 during: extra requests % ")

	_, err = bench.Run(ctx, bench.Config{Reshard: true, ReshardStrategies: []string{"ring"}})
	assert.ErrorContains(t, err, `unknown strategy "ring"`)
	_, err = bench.Run(ctx, bench.Config{Reshard: true, Servers: []string{"127.0.0.1:1"}})
	assert.ErrorContains(t, err, "at least 2 servers")
}
