package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/testproxy"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// In a partition the server releases a silent connection's locks after
// its read timeout, whatever their lease. A holder with a long lease must
// give the lock up before that, so that the next holder (granted when the
// server times the connection out) never overlaps with it.
func TestPartitionedHolderGivesUpBeforeTheServerReleases(t *testing.T) {
	srv, err := fakeserver.Start(fakeserver.Config{ReadTimeout: 2 * time.Second})
	require.NoError(t, err)
	defer srv.Close()
	proxy := testproxy.Start(t, srv.Addr(), nil)

	a, err := lock.New(lock.Config{Servers: []string{proxy.Addr()}, Pool: pool.Config{ServerReadTimeout: 2 * time.Second}})
	require.NoError(t, err)
	defer a.Close()
	b, err := lock.New(lock.Config{Servers: []string{srv.Addr()}, Pool: pool.Config{ServerReadTimeout: 2 * time.Second}})
	require.NoError(t, err)
	defer b.Close()

	// A 30 s lease, renewed only after 27 s: only the read timeout can
	// end it within this test.
	la := a.Lock("k", lock.LeaseTTL(30*time.Second), lock.RenewRatio(0.9))
	mustAcquire(t, la)
	granted := make(chan time.Time, 1)
	go func() {
		ok, err := b.Lock("k", lock.AcquireTimeout(10*time.Second)).Acquire(context.Background())
		assert.NoError(t, err)
		assert.True(t, ok)
		granted <- time.Now()
	}()
	require.Eventually(t, func() bool { return srv.Busy() == 1 }, wait, time.Millisecond)

	proxy.Partition(true)
	var lostAt time.Time
	select {
	case <-la.Lost():
		lostAt = time.Now()
	case <-time.After(10 * time.Second):
		t.Fatal("the partitioned holder never gave up")
	}
	assert.Equal(t, "", la.Token())
	var grantedAt time.Time
	select {
	case grantedAt = <-granted:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was never granted")
	}
	t.Logf("holder gave up %v before the next grant", grantedAt.Sub(lostAt))
	assert.True(t, lostAt.Before(grantedAt), "the holder gave up (%v) before the server granted the lock to another (%v)", lostAt, grantedAt)
}
