package lock_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/bench"
	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testfleet"
	"github.com/dflock-go/dflock/lock"
)

func TestMain(m *testing.M) {
	bench.ServeFleetIfAsked() // BenchmarkHoldMany's fleet in another process
	goleak.VerifyTestMain(m)
}

const wait = 5 * time.Second

// testFleet is where the behaviour suite runs: a fakeserver fleet, or the
// real servers named by DFLOCK_TEST_SERVERS=host:port[,host:port...], or
// (newVirtualFleet) fakeservers on an in-memory network in a
// testing/synctest bubble.
type testFleet struct {
	addrs []string
	fake  *fakeserver.Fleet // nil against real servers
	mem   *testfleet.Fleet  // in a bubble: the network the clients dial
}

// newVirtualFleet starts n fakeservers with cfg on an in-memory network
// for a test in a synctest bubble (call it inside synctest.Test): leases,
// timeouts, keep-alives and backoffs run on the bubble's virtual clock,
// so a busy machine cannot move them and seconds of protocol time take
// microseconds. Clients made by client() dial that network. Never
// against real servers: their time is real.
func newVirtualFleet(t *testing.T, n int, cfg fakeserver.Config) *testFleet {
	t.Helper()
	f := testfleet.Start(t, n, cfg)
	return &testFleet{addrs: f.Addrs(), fake: f.Fleet, mem: f}
}

func newFleet(t *testing.T, n int, cfg fakeserver.Config) *testFleet {
	t.Helper()
	if env := os.Getenv("DFLOCK_TEST_SERVERS"); env != "" {
		return &testFleet{addrs: strings.Split(env, ",")}
	}
	f, err := fakeserver.StartFleet(n, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return &testFleet{addrs: f.Addrs(), fake: f}
}

// server returns the fake server at addr; tests that need fault hooks or
// a particular server configuration skip against real servers.
func (f *testFleet) server(t *testing.T, i int) *fakeserver.Server {
	t.Helper()
	if f.fake == nil {
		t.Skip("needs the fakeserver's fault hooks or config")
	}
	return f.fake.Servers[i]
}

func (f *testFleet) client(t *testing.T, cfg lock.Config) *lock.Client {
	t.Helper()
	if cfg.Servers == nil && cfg.Strategy == nil && cfg.FleetFile == "" {
		cfg.Servers = f.addrs
	}
	if f.mem != nil {
		cfg.Pool = f.mem.Pool(cfg.Pool)
	}
	c, err := lock.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// uniqueKey keeps tests apart on shared real servers.
func uniqueKey(t *testing.T, name string) string {
	return strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()) + "-" + name
}

// mustAcquire acquires l or fails the test.
func mustAcquire(t *testing.T, l interface {
	Acquire(context.Context) (bool, error)
}) {
	t.Helper()
	ok, err := l.Acquire(ctxFor(t, wait))
	require.NoError(t, err)
	require.True(t, ok)
}
