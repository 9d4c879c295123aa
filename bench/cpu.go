package bench

import "time"

// cpuSpan adds up this process's CPU time, and the requests the client
// sent, over the spans a workload measures, so that cpu/op and req/op
// leave out warm-up and the harness's own pauses (hold-many's forced
// collections).
type cpuSpan struct {
	total, from time.Duration
	failed      bool
	// requests counts what the client sent so far; nil when unknown.
	requests          func() uint64
	reqTotal, reqFrom uint64
}

func (s *cpuSpan) start() {
	var ok bool
	s.from, ok = cpuTime()
	s.failed = s.failed || !ok
	if s.requests != nil {
		s.reqFrom = s.requests()
	}
}

func (s *cpuSpan) stop() {
	now, ok := cpuTime()
	s.failed = s.failed || !ok
	s.total += now - s.from
	if s.requests != nil {
		s.reqTotal += s.requests() - s.reqFrom
	}
}

// reqPerOp is the requests sent per op, 0 when unknown.
func (s *cpuSpan) reqPerOp(ops int64) float64 {
	if s.requests == nil || ops <= 0 {
		return 0
	}
	return float64(s.reqTotal) / float64(ops)
}

// perOp is 0, printed "-", when there is no honest figure: no ops, or no
// getrusage.
func (s *cpuSpan) perOp(ops int64) time.Duration {
	if s.failed || ops <= 0 {
		return 0
	}
	return s.total / time.Duration(ops)
}
