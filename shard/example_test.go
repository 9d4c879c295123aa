package shard_test

import (
	"fmt"

	"github.com/dflock-go/dflock/shard"
)

// StableHash routes like the Python, TypeScript and upstream Go clients.
func ExampleStableHash() {
	s, err := shard.NewStableHash([]string{"10.0.0.1:6388", "10.0.0.2:6388", "10.0.0.3:6388"})
	if err != nil {
		panic(err)
	}
	addr, _ := s.Server("my-key") // zlib.crc32(b"my-key") % 3 == 2
	fmt.Println(addr)
	// Output: 10.0.0.3:6388
}

// Before adding a server, find the keys that will move and drain them.
func ExampleRendezvous_PlanAdd() {
	s, err := shard.NewRendezvous([]string{"10.0.0.1:6388", "10.0.0.2:6388"})
	if err != nil {
		panic(err)
	}
	held := []string{"orders/1", "orders/2", "orders/3", "orders/4", "orders/5", "orders/6"}
	moves, _ := s.PlanAdd("10.0.0.3:6388", held)
	for _, m := range moves {
		fmt.Println(m.Key, "moves to", m.To)
	}
	// Release those keys' locks and stop taking them, then:
	if err := s.Add("10.0.0.3:6388"); err != nil {
		panic(err)
	}
	// Output:
	// orders/3 moves to 10.0.0.3:6388
	// orders/4 moves to 10.0.0.3:6388
	// orders/5 moves to 10.0.0.3:6388
}
