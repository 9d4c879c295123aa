package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
)

// Every call gets its span, with the server, the kind and the outcome,
// never the key.
func TestSpans(t *testing.T) {
	f, c, rec := tracedClient(t, 1)
	ctx := ctxFor(t, wait)

	a := c.Lock("secret-key")
	mustAcquire(t, a)
	ok, err := c.Lock("secret-key").TryAcquire(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	q := c.Lock("secret-key")
	st, err := q.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, lock.Queued, st)
	require.NoError(t, a.Release(ctx))
	ok, err = q.Wait(ctx, wait)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, q.Release(ctx))
	require.NoError(t, c.WithLock(ctx, "other", func(context.Context) error { return nil }))
	// An error's span says its kind, not its text, which names the key.
	l := c.Lock("secret-key")
	mustAcquire(t, l)
	f.server(t, 0).DropConnections()
	select {
	case <-l.Lost():
	case <-time.After(wait):
		t.Fatal("not lost")
	}
	require.ErrorIs(t, l.Release(ctx), lock.ErrLockLost)
	last := rec.Ended()[len(rec.Ended())-1]
	assert.Equal(t, "lock lost", last.Status().Description)
	for _, sp := range rec.Ended() {
		assert.NotContains(t, sp.Status().Description, "secret-key")
		assert.Empty(t, sp.Events(), "no error event: its message would name the key")
	}

	got := spansSeen(t, rec, "secret-key", func(kv attribute.KeyValue) {
		switch kv.Key {
		case "server.address":
			assert.Equal(t, f.addrs[0], kv.Value.AsString())
		case "dflock.kind":
			assert.Equal(t, "lock", kv.Value.AsString())
		}
	})
	assert.Equal(t, []spanSeen{
		{"dflock.Acquire", "acquired", 0},
		{"dflock.TryAcquire", "timeout", 0},
		{"dflock.Enqueue", "queued", 0},
		{"dflock.Release", "", 0},
		{"dflock.Wait", "acquired", 0},
		{"dflock.Release", "", 0},
		{"dflock.Acquire", "acquired", 0}, // inside WithLock
		{"dflock.WithLock", "", 0},
		{"dflock.Acquire", "acquired", 0},
		{"dflock.Release", "", 0},
	}, got)
}

// Calls on many keys get one span each, with the number of keys, never
// the keys; a set's waits are its own span's.
func TestManyKeySpans(t *testing.T) {
	_, c, rec := tracedClient(t, 2)
	ctx := ctxFor(t, wait)
	keys := []string{"secret-a", "secret-b", "secret-c"}

	held, _, err := c.TryLockMany(ctx, keys)
	require.NoError(t, err)
	_, err = c.LockAll(ctx, keys, lock.AcquireTimeout(0))
	require.ErrorIs(t, err, lock.ErrTimeout)
	require.NoError(t, c.ReleaseMany(ctx, held...))
	require.NoError(t, c.WithLockAll(ctx, keys, func(context.Context) error { return nil }))

	got := spansSeen(t, rec, "secret", func(attribute.KeyValue) {})
	assert.Equal(t, []spanSeen{
		{"dflock.TryLockMany", "", 3},
		{"dflock.LockAll", "timeout", 3},
		{"dflock.ReleaseMany", "", 3},
		{"dflock.LockAll", "acquired", 3}, // inside WithLockAll
		{"dflock.Set.Release", "", 3},
		{"dflock.WithLockAll", "", 3},
	}, got)
}

// spanSeen is what a test reads of an ended span.
type spanSeen struct {
	name, outcome string
	keys          int64 // dflock.keys
}

// spansSeen reads every span rec saw ended, checking that no attribute
// or status names secret and passing each attribute to check.
func spansSeen(t *testing.T, rec *tracetest.SpanRecorder, secret string, check func(attribute.KeyValue)) []spanSeen {
	t.Helper()
	var got []spanSeen
	for _, sp := range rec.Ended() {
		s := spanSeen{name: sp.Name()}
		for _, kv := range sp.Attributes() {
			switch kv.Key {
			case "dflock.outcome":
				s.outcome = kv.Value.AsString()
			case "dflock.keys":
				s.keys = kv.Value.AsInt64()
			}
			check(kv)
			assert.NotContains(t, kv.Value.String(), secret, "%s: %s", sp.Name(), kv.Key)
		}
		assert.NotContains(t, sp.Status().Description, secret)
		got = append(got, s)
	}
	return got
}

// tracedClient starts a fleet of n servers and a client that records its
// spans.
func tracedClient(t *testing.T, n int) (*testFleet, *lock.Client, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	f := newFleet(t, n, fakeserver.Config{})
	return f, f.client(t, lock.Config{TracerProvider: tp}), rec
}
