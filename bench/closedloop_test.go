package bench

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A workload whose every op outlasts the warm-up and the duration (a slow
// server, a busy machine) still measures ops: a worker that finds the
// measured phase over before it started an op in it runs one, measured,
// and the run ends once they are done. A fast one measures for the
// duration.
func TestClosedLoopMeasuresSlowOps(t *testing.T) {
	for _, c := range []struct {
		name    string
		op      time.Duration
		wantOps int64
		lasts   time.Duration
	}{
		// Workers start an op at 0 (warm-up), done at 1 s, past the end
		// (170 ms): each starts one more, measured, done at 2 s.
		{"slow", time.Second, 4, 2 * time.Second},
		// 10 ms ops: 15 each in the 150 ms measured phase.
		{"fast", 10 * time.Millisecond, 4 * 15, 170 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := Config{Duration: 150 * time.Millisecond, Warmup: 20 * time.Millisecond, Workers: 4}
				start := time.Now()
				res, err := closedLoop(context.Background(), cfg, "slow", "an op", func(ctx context.Context, w int, n int64) error {
					time.Sleep(c.op) // the op's own duration, in virtual time
					return nil
				})
				require.NoError(t, err)
				assert.Equal(t, c.wantOps, res.Ops)
				assert.Equal(t, c.lasts, time.Since(start))
			})
		})
	}
}
