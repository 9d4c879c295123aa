package lock_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	// fromFull counts losses of replicated locks that held every replica
	// just before.
	fromFull atomic.Int64
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

// watchLosses runs every hook, in order, on each loss c declares (a
// client has one loss hook: this shares it, say between a lossDetector's
// check and a history's declare).
func watchLosses(c *lock.Client, hooks ...func(lock.LossReport)) {
	lock.SetLossHook(c, func(r lock.LossReport) {
		for _, f := range hooks {
			f(r)
		}
	})
}

func (d *lossDetector) check(r lock.LossReport) {
	d.reported.Add(1)
	if r.Replicas > 1 && r.HeldBefore == r.Replicas {
		// One fault takes one replica: this one took more than that.
		d.fromFull.Add(1)
	}
	key, gs, quorum, err := r.Key, r.Grants, r.Quorum, r.Err
	// A lock is still ours while quorum of its replicas (its one server,
	// without replicas) still hold its tokens, with time left and no
	// fault injected there since the grant.
	still := 0
	var where []string
	for _, g := range gs {
		srv := d.servers[g.Addr]
		if srv == nil {
			return
		}
		st := srv.TokenState(key, g.Token)
		if st.Held && st.LeaseLeft > 0 && !st.Faulted {
			still++
			where = append(where, fmt.Sprintf("%s for %v more", g.Addr, st.LeaseLeft.Round(time.Millisecond)))
		}
	}
	if still >= quorum {
		d.false_.Add(1)
		d.mu.Lock()
		d.details = append(d.details, fmt.Sprintf("%s: the servers still held it (%v, %d needed), no fault injected: %v", key, where, quorum, err))
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

// The detector can fail, in virtual time: a loss reported for a grant
// the server still holds, with lease left (1 ms of it) and no fault
// since, is false; one for a grant the server no longer holds, or held
// across a fault, is not.
func TestLossDetectorFindsFalseLosses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newVirtualFleet(t, 1, fakeserver.Config{DisableAutoRelease: true})
		d := newLossDetector(t, f)
		c := f.client(t, lock.Config{})
		report := func(l *lock.Lock) lock.LossReport {
			return lock.LossReport{Key: l.Key(), Grants: lock.GrantsOf(l), Replicas: 1, Quorum: 1, HeldBefore: 1}
		}

		held := c.Lock("held", lock.LeaseTTL(2*time.Second))
		mustAcquire(t, held)
		r := report(held)
		time.Sleep(1999 * time.Millisecond)
		d.check(r)
		n, details := d.falseLosses()
		assert.Equal(t, int64(1), n, "lease left: 1 ms")
		assert.Len(t, details, 1)

		released := c.Lock("released")
		mustAcquire(t, released)
		r = report(released)
		require.NoError(t, released.Release(ctxFor(t, wait)))
		d.check(r)

		faulted := f.client(t, lock.Config{}).Lock("faulted", lock.LeaseTTL(time.Minute))
		mustAcquire(t, faulted)
		r = report(faulted)
		f.server(t, 0).NoteFault()
		d.check(r)

		n, _ = d.falseLosses()
		assert.Equal(t, int64(1), n, "only the first was false")
		assert.Equal(t, int64(3), d.reported.Load())
	})
}
