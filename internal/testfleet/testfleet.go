// Package testfleet runs fakeservers on an in-memory network, for tests
// in a testing/synctest bubble, and gives the pool configuration that
// reaches them.
//
// In a bubble the clock is virtual: leases, read timeouts, keep-alives
// and backoffs run to the nanosecond and take no real time, and
// synctest.Wait returns once servers and pools have done all they can
// until the clock moves.
//
//	synctest.Test(t, func(t *testing.T) {
//		f := testfleet.Start(t, 3, fakeserver.Config{})
//		p, err := pool.New(f.Addrs()[0], f.Pool(pool.Config{}))
//		...
//		f.Servers[1].Stop() // refused, as a closed TCP port, until Restart
//	})
package testfleet

import (
	"testing"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/memnet"
	"github.com/dflock-go/dflock/pool"
)

// Fleet is servers on one in-memory network.
type Fleet struct {
	*fakeserver.Fleet
	Net *memnet.Network
}

// Start starts n servers with cfg on a new in-memory network, each on its
// own address (cfg.Port must be 0), and closes them when the test ends.
// Call it inside the bubble that uses the fleet: its channels and timers
// belong to the bubble they are made in.
func Start(t testing.TB, n int, cfg fakeserver.Config) *Fleet {
	t.Helper()
	nw := memnet.New()
	cfg.Listen = nw.Listen
	f, err := fakeserver.StartFleet(n, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &Fleet{Fleet: f, Net: nw}
}

// Pool returns cfg with Dial set to reach the fleet's servers.
func (f *Fleet) Pool(cfg pool.Config) pool.Config {
	cfg.Dial = f.Net.Dial
	return cfg
}
