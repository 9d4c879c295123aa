package lock_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// blackhole is a TCP proxy that can start swallowing bytes both ways while
// keeping connections open: a network partition, as seen from both ends.
type blackhole struct {
	ln       net.Listener
	target   string
	dropping atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &blackhole{ln: ln, target: target}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.close)
	return b
}

func (b *blackhole) addr() string { return b.ln.Addr().String() }

func (b *blackhole) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", b.target)
		if err != nil {
			c.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, c, s)
		b.mu.Unlock()
		b.wg.Add(2)
		go b.pipe(c, s)
		go b.pipe(s, c)
	}
}

func (b *blackhole) pipe(from, to net.Conn) {
	defer b.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := from.Read(buf)
		if n > 0 && !b.dropping.Load() {
			to.Write(buf[:n])
		}
		if err != nil {
			to.Close()
			return
		}
	}
}

func (b *blackhole) close() {
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// In a partition the server releases a silent connection's locks after
// its read timeout, whatever their lease. A holder with a long lease must
// give the lock up before that, so that the next holder (granted when the
// server times the connection out) never overlaps with it.
func TestPartitionedHolderGivesUpBeforeTheServerReleases(t *testing.T) {
	srv, err := fakeserver.Start(fakeserver.Config{ReadTimeout: 2 * time.Second})
	require.NoError(t, err)
	defer srv.Close()
	proxy := newBlackhole(t, srv.Addr())

	a, err := lock.New(lock.Config{Servers: []string{proxy.addr()}, Pool: pool.Config{ServerReadTimeout: 2 * time.Second}})
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

	proxy.dropping.Store(true)
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
