package pool_test

import (
	"context"
	"testing"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// release is a release-style round trip: a release of a token nobody holds
// ("error" reply), the same work on the server as a real release.
var release = wire.Request{Cmd: wire.CmdRelease, Key: "bench", Token: "0123456789abcdef0123456789abcdef"}

// BenchmarkRoundTrip: 64 callers doing release-style round trips against
// one fakeserver. "pipelined" shares 2 connections, each caller's request
// written together with the others'; "exclusive" gives each request a
// connection of its own (pinned, then returned), one request in flight per
// connection, as a non-pipelining pool does.
func BenchmarkRoundTrip(b *testing.B) {
	srv, err := fakeserver.Start(fakeserver.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	b.Run("pipelined/callers=64", func(b *testing.B) {
		p, err := pool.New(srv.Addr(), pool.Config{MaxConns: 66, SharedConns: 2})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		run(b, func(ctx context.Context) error {
			_, err := p.Do(ctx, &release)
			return err
		})
	})
	b.Run("exclusive/callers=64", func(b *testing.B) {
		p, err := pool.New(srv.Addr(), pool.Config{MaxConns: 66, SharedConns: 2})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		run(b, func(ctx context.Context) error {
			pin, err := p.Pin(ctx)
			if err != nil {
				return err
			}
			defer pin.Unpin()
			_, err = pin.Do(ctx, &release)
			return err
		})
	})
}

func run(b *testing.B, op func(context.Context) error) {
	ctx := context.Background()
	b.SetParallelism(32) // 32 × GOMAXPROCS(2) = 64 callers
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
