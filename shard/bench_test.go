package shard_test

import (
	"fmt"
	"testing"

	"github.com/dflock-go/dflock/shard"
)

var sink string

// BenchmarkLookup measures one key → server lookup per op for each
// strategy and fleet size. Every strategy must report 0 allocs/op.
func BenchmarkLookup(b *testing.B) {
	keys := keySet(1024)
	for _, n := range []int{3, 8, 32} {
		stable, _ := shard.NewStableHash(fleet(n))
		ring, _ := shard.NewConsistent(fleet(n), shard.ConsistentConfig{})
		fn, _ := shard.NewFunc(fleet(n), shard.Index)
		hrw, _ := shard.NewRendezvous(fleet(n))
		for _, s := range []struct {
			name string
			s    shard.Strategy
		}{{"stable", stable}, {"consistent", ring}, {"func", fn}, {"rendezvous", hrw}} {
			b.Run(fmt.Sprintf("%s/n=%d", s.name, n), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					sink, _ = s.s.Server(keys[i&1023])
					i++
				}
			})
		}
	}
}

// BenchmarkMembershipChange measures building a membership, the cost of
// Add, Remove and each Plan.
func BenchmarkMembershipChange(b *testing.B) {
	for _, n := range []int{3, 32} {
		b.Run(fmt.Sprintf("consistent/n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := shard.NewConsistent(fleet(n), shard.ConsistentConfig{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReplicas measures one key → 3 replicas lookup per op: one
// allocation (the result) for every strategy; rendezvous also ranks
// every server.
func BenchmarkReplicas(b *testing.B) {
	keys := keySet(1024)
	for _, n := range []int{5, 32} {
		for _, name := range shard.Names() {
			s, _ := shard.ByName(name, fleet(n))
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					r, _ := shard.Replicas(s, keys[i&1023], 3)
					sink = r[0]
					i++
				}
			})
		}
	}
}
