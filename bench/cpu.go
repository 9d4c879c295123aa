package bench

import "time"

// cpuSpan adds up this process's CPU time over the spans a workload
// measures, so that cpu/op leaves out warm-up and the harness's own
// pauses (hold-many's forced collections).
type cpuSpan struct {
	total, from time.Duration
	failed      bool
}

func (s *cpuSpan) start() {
	var ok bool
	s.from, ok = cpuTime()
	s.failed = s.failed || !ok
}

func (s *cpuSpan) stop() {
	now, ok := cpuTime()
	s.failed = s.failed || !ok
	s.total += now - s.from
}

// perOp is 0, printed "-", when there is no honest figure: no ops, or no
// getrusage.
func (s *cpuSpan) perOp(ops int64) time.Duration {
	if s.failed || ops <= 0 {
		return 0
	}
	return s.total / time.Duration(ops)
}
