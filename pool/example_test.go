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
	g := res.Grant
	g.OnLost(func(err error) { fmt.Println("lost:", err) })
	fmt.Println("held; locks in the pool:", p.Stats().Grants)

	// Renew it for 20 s: the pool applies the answer to this grant.
	if errs := p.Renew(ctx, []pool.Renewal{{Grant: g, Lease: 20}}); errs[0] != nil {
		panic(errs[0])
	}
	_, lease := g.Lease()
	fmt.Println("renewed for", lease)

	if err := g.Release(ctx); err != nil {
		panic(err)
	}
	fmt.Println("released; locks in the pool:", p.Stats().Grants)
	// Output:
	// held; locks in the pool: 1
	// renewed for 20s
	// released; locks in the pool: 0
}
