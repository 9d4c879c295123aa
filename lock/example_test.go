package lock_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
)

// exampleServer stands in for a dflockd at 127.0.0.1:6388.
func exampleServer() (*fakeserver.Server, func()) {
	srv, err := fakeserver.Start(fakeserver.Config{})
	if err != nil {
		panic(err)
	}
	return srv, func() { srv.Close() }
}

// The context manager: acquired on entry, released on exit (also on error
// or panic). Not acquired within the timeout, it returns lock.ErrTimeout.
func ExampleClient_WithLock() {
	srv, stop := exampleServer()
	defer stop()
	c, err := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	err = c.WithLock(context.Background(), "my-key", func(ctx context.Context) error {
		// critical section; ctx ends if the lock is lost
		fmt.Println("in the critical section")
		return nil
	}, lock.AcquireTimeout(10*time.Second))
	if errors.Is(err, lock.ErrTimeout) {
		fmt.Println("not acquired in time")
	}
	// Output: in the critical section
}

// Manual acquire and release: false on timeout instead of an error.
// The guide's first block prints the token and the lease inside the
// critical section: Lock.With gives fn the handle, as l.
func ExampleLock_With() {
	srv, stop := exampleServer()
	defer stop()
	c, err := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	l := c.Lock("my-key", lock.LeaseTTL(20*time.Second))
	err = l.With(context.Background(), func(ctx context.Context) error {
		fmt.Printf("token of %d hex digits, lease %v\n", len(l.Token()), l.Lease())
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	fmt.Printf("after: token %q, lease %v\n", l.Token(), l.Lease())
	// Output:
	// token of 32 hex digits, lease 20s
	// after: token "", lease 0s
}

func ExampleLock_Acquire() {
	srv, stop := exampleServer()
	defer stop()
	c, _ := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	defer c.Close()
	ctx := context.Background()

	l := c.Lock("my-key", lock.AcquireTimeout(10*time.Second))
	acquired, err := l.Acquire(ctx)
	if err != nil {
		panic(err)
	}
	if acquired {
		fmt.Println("token:", len(l.Token()), "hex digits; lease:", l.Lease())
		// critical section
		if err := l.Release(ctx); err != nil {
			panic(err)
		}
	}
	// Output: token: 32 hex digits; lease: 33s
}

// Cleanup: Close releases (if held) and stops renewal; it is safe to call
// twice and after a loss. Client.Close does it for every lock.
func ExampleLock_Close() {
	srv, stop := exampleServer()
	defer stop()
	c, _ := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	defer c.Close()

	l := c.Lock("my-key")
	defer l.Close()
	if ok, _ := l.Acquire(context.Background()); ok {
		fmt.Println("work")
		if err := l.Release(context.Background()); err != nil {
			panic(err)
		}
	}
	// Output: work
}

// Two-phase acquisition: join the queue, tell someone, then wait.
func ExampleLock_Enqueue() {
	srv, stop := exampleServer()
	defer stop()
	c, _ := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	defer c.Close()
	ctx := context.Background()

	l := c.Lock("my-key", lock.AcquireTimeout(10*time.Second))
	status, err := l.Enqueue(ctx) // lock.Acquired or lock.Queued
	if err != nil {
		panic(err)
	}
	fmt.Println("status:", status) // notify an external system here
	if ok, err := l.Wait(ctx, 10*time.Second); err == nil && ok {
		fmt.Println("critical section")
		_ = l.Release(ctx)
	}
	// Output:
	// status: acquired
	// critical section
}

// The low-level calls on a connection you dialled yourself.
func ExampleConn() {
	srv, stop := exampleServer()
	defer stop()
	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		panic(err)
	}
	conn := lock.NewConn(nc)
	defer conn.Close()
	ctx := context.Background()

	token, lease, err := conn.Acquire(ctx, "my-key", 10*time.Second, 0)
	if err != nil {
		panic(err)
	}
	remaining, _ := conn.Renew(ctx, "my-key", token, lease)
	fmt.Println("lease:", lease, "renewed to:", remaining)
	if err := conn.Release(ctx, "my-key", token); err != nil {
		panic(err)
	}
	// Output: lease: 33s renewed to: 33s
}

// The two-phase low-level calls: enqueue and wait on the same connection.
func ExampleConn_Enqueue() {
	srv, stop := exampleServer()
	defer stop()
	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		panic(err)
	}
	conn := lock.NewConn(nc)
	defer conn.Close()
	ctx := context.Background()

	status, token, _, err := conn.Enqueue(ctx, "my-key", 0)
	if err != nil {
		panic(err)
	}
	if status == lock.Queued {
		if token, _, err = conn.Wait(ctx, "my-key", 10*time.Second); err != nil {
			panic(err)
		}
	}
	fmt.Println(status, len(token))
	_ = conn.Release(ctx, "my-key", token)
	// Output: acquired 32
}

// A lock on 3 of 5 servers, held on a quorum of them: one of its servers
// down costs nothing.
func ExampleConfig_replicas() {
	fleet, err := fakeserver.StartFleet(5, fakeserver.Config{})
	if err != nil {
		panic(err)
	}
	defer fleet.Close()
	c, err := lock.New(lock.Config{Servers: fleet.Addrs(), Replicas: 3})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	ctx := context.Background()

	// The key's first server is down.
	servers, _ := c.ServersFor("orders/42")
	for _, srv := range fleet.Servers {
		if srv.Addr() == servers[0] {
			srv.Stop()
		}
	}
	// The other two take it, and hold it against any other client.
	l := c.Lock("orders/42")
	if ok, err := l.Acquire(ctx); !ok || err != nil {
		panic(err)
	}
	fmt.Println("replicas:", len(servers), "quorum:", lock.Quorum(3, 1))
	fmt.Println("held on:", len(l.HeldOn()), "servers, the first one not among them:", !slices.Contains(l.HeldOn(), servers[0]))
	other, err := lock.New(lock.Config{Servers: fleet.Addrs(), Replicas: 3})
	if err != nil {
		panic(err)
	}
	defer other.Close()
	taken, err := other.Lock("orders/42").TryAcquire(ctx)
	fmt.Println("taken by another client:", taken, err)
	fmt.Println(l.Release(ctx))
	// Output:
	// replicas: 3 quorum: 2
	// held on: 2 servers, the first one not among them: true
	// taken by another client: false <nil>
	// <nil>
}

// Servers started with --tls-cert and --auth-token: TLS and the token are
// settings of the connections, in Config.Pool. (Not run: it needs such
// servers.)
func ExampleConfig_tls() {
	ca, err := os.ReadFile("/etc/dflock/ca.pem")
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	token, err := os.ReadFile("/etc/dflock/token")
	if err != nil {
		panic(err)
	}
	c, err := lock.New(lock.Config{
		Servers: []string{"10.0.0.1:6388", "10.0.0.2:6388"},
		Pool: pool.Config{
			TLS:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			AuthToken: strings.TrimSpace(string(token)),
		},
	})
	if err != nil {
		panic(err)
	}
	defer c.Close()
}

// Growing a fleet from 3 servers to 4 while a lock is held: every client
// enters the transition, then, once all have, every client commits. The
// lock is held throughout; a key that moves is held on its old server
// and its new one while the change is under way.
func ExampleClient_Reconfigure() {
	fleet, err := fakeserver.StartFleet(4, fakeserver.Config{})
	if err != nil {
		panic(err)
	}
	defer fleet.Close()
	addrs := fleet.Addrs()
	before, _ := shard.NewRendezvous(addrs[:3])
	after, _ := shard.NewRendezvous(addrs)
	c, err := lock.New(lock.Config{Strategy: before})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	ctx := context.Background()

	// A key that the fourth server takes over.
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprint("job-", i); mustServer(after, k) == addrs[3] {
			key = k
		}
	}
	l := c.Lock(key)
	if ok, err := l.Acquire(ctx); err != nil || !ok {
		panic(err)
	}
	fmt.Println("held on", len(l.HeldOn()), "server")

	// Step 1, in every client.
	if err := c.Reconfigure(ctx, after); err != nil {
		panic(err)
	}
	fmt.Println("in the transition: held on", len(l.HeldOn()), "servers")

	// Step 2, once every client has returned from step 1.
	if err := c.Commit(ctx); err != nil {
		panic(err)
	}
	fmt.Println("after: held on the new server:", l.HeldOn()[0] == addrs[3])
	// Output:
	// held on 1 server
	// in the transition: held on 2 servers
	// after: held on the new server: true
}

func mustServer(s shard.Strategy, key string) string {
	addr, err := s.Server(key)
	if err != nil {
		panic(err)
	}
	return addr
}

// A scheduler claims whichever of its ready tasks are free, in one round
// trip per server, works on them, and gives them back together.
func ExampleClient_TryLockMany() {
	srv, stop := exampleServer()
	defer stop()
	c, _ := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	defer c.Close()
	ctx := context.Background()

	// Another worker has task-2.
	other := c.Lock("task-2")
	other.Acquire(ctx)

	held, busy, err := c.TryLockMany(ctx, []string{"task-1", "task-2", "task-3"})
	if err != nil {
		// Keys neither held nor busy (a server down); held is still ours.
		fmt.Println(err)
	}
	for _, l := range held {
		fmt.Println("working on", l.Key())
	}
	fmt.Println("busy:", busy)
	if err := c.ReleaseMany(ctx, held...); err != nil {
		fmt.Println(err)
	}
	// Output:
	// working on task-1
	// working on task-3
	// busy: [task-2]
}

// Moving money between two accounts needs both: taken all or none, and
// without deadlock against a transfer the other way round.
func ExampleClient_WithLockAll() {
	srv, stop := exampleServer()
	defer stop()
	c, _ := lock.New(lock.Config{Servers: []string{srv.Addr()}})
	defer c.Close()

	err := c.WithLockAll(context.Background(), []string{"account-b", "account-a"}, func(ctx context.Context) error {
		// Both held; ctx ends, with cause lock.ErrLockLost, if either is
		// lost.
		fmt.Println("both held")
		return nil
	}, lock.AcquireTimeout(10*time.Second))
	if errors.Is(err, lock.ErrTimeout) {
		fmt.Println("not all acquired in time; none held")
	}
	// Output: both held
}
