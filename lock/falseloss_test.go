package lock_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
)

// lossDetector finds false losses: at the moment a client reports a lock
// lost, it asks the fakeserver whether it still held that token, with
// time left on its lease, and no fault injected since the grant. Such a
// loss dropped (and gave back) a lock that was still ours.
type lossDetector struct {
	servers  map[string]*fakeserver.Server // by the address clients dial
	reported atomic.Int64
	false_   atomic.Int64
	mu       sync.Mutex
	details  []string
}

func newLossDetector(t *testing.T, f *testFleet) *lossDetector {
	t.Helper()
	d := &lossDetector{servers: map[string]*fakeserver.Server{}}
	for i, addr := range f.addrs {
		d.servers[addr] = f.server(t, i)
	}
	return d
}

// watch checks every loss c reports.
func (d *lossDetector) watch(c *lock.Client) {
	lock.SetLossHook(c, d.check)
}

func (d *lossDetector) check(addr, key, token string, err error) {
	d.reported.Add(1)
	srv := d.servers[addr]
	if srv == nil {
		return
	}
	st := srv.TokenState(key, token)
	if st.Held && st.LeaseLeft > 0 && !st.Faulted {
		d.false_.Add(1)
		d.mu.Lock()
		d.details = append(d.details, fmt.Sprintf("%s on %s: the server still held it for %v more, no fault injected: %v", key, addr, st.LeaseLeft.Round(time.Millisecond), err))
		d.mu.Unlock()
	}
}

// falseLosses returns how many false losses were seen, and the first few.
func (d *lossDetector) falseLosses() (int64, []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.false_.Load(), d.details[:min(len(d.details), 10)]
}

// assertNoFalseLoss fails t if d saw any false loss.
func (d *lossDetector) assertNoFalseLoss(t *testing.T) {
	t.Helper()
	if n, details := d.falseLosses(); n > 0 {
		t.Errorf("%d false losses of %d reported; first: %v", n, d.reported.Load(), details)
	}
}
