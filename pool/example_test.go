package pool_test

import (
	"context"
	"fmt"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/wire"
)

// Take a lock, learn if its connection breaks, release it.
func Example() {
	srv, _ := fakeserver.Start(fakeserver.Config{})
	defer srv.Close()
	p, err := pool.New(srv.Addr(), pool.Config{})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	ctx := context.Background()

	res, err := p.Do(ctx, &wire.Request{Cmd: wire.CmdLock, Key: "orders", Timeout: 10})
	if err != nil || res.Resp.Err() != nil {
		panic(fmt.Sprint(err, res.Resp.Err()))
	}
	res.Hold.OnLost(func(err error) { fmt.Println("lost:", err) })
	fmt.Println("held; locks in the pool:", p.Stats().Holds)

	rel := wire.Request{Cmd: wire.CmdRelease, Key: "orders", Token: res.Resp.Token}
	if _, err := p.Do(ctx, &rel); err != nil {
		panic(err)
	}
	res.Hold.Done()
	fmt.Println("released; locks in the pool:", p.Stats().Holds)
	// Output:
	// held; locks in the pool: 1
	// released; locks in the pool: 0
}
