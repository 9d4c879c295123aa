package lock_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// TestConfigChecked: a Config that New cannot honour is an error matching
// ErrInvalid, not a surprise later.
func TestConfigChecked(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	for name, cfg := range map[string]lock.Config{
		"negative ReplicaTimeout": {ReplicaTimeout: -time.Second},
		"negative CloseTimeout":   {CloseTimeout: -time.Second},
		// One place for each: the client gives its connections its own.
		"Pool.Logger":        {Pool: pool.Config{Logger: slog.Default()}},
		"Pool.MeterProvider": {Pool: pool.Config{MeterProvider: noop.NewMeterProvider()}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Servers = f.addrs
			_, err := lock.New(cfg)
			assert.ErrorIs(t, err, lock.ErrInvalid)
		})
	}
}

// TestConfigCloseTimeoutBoundsClose: a server that stopped answering
// holds Client.Close up to Config.CloseTimeout, not DefaultCloseTimeout.
func TestConfigCloseTimeoutBoundsClose(t *testing.T) {
	f := newFleet(t, 1, fakeserver.Config{})
	srv := f.server(t, 0)
	c := f.client(t, lock.Config{CloseTimeout: 200 * time.Millisecond})
	mustAcquire(t, c.Lock("k"))
	srv.Stall(time.Minute)
	defer srv.Unstall()

	start := time.Now()
	require.NoError(t, c.Close())
	took := time.Since(start)
	assert.GreaterOrEqual(t, took, 200*time.Millisecond, "Close waited for the release's answer")
	assert.Less(t, took, lock.DefaultCloseTimeout/2)
}
