package fakeserver_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"

	"github.com/dflock-go/dflock/fakeserver"
)

// Start a server on a free loopback port and take a lock over raw TCP.
func ExampleStart() {
	srv, err := fakeserver.Start(fakeserver.Config{DefaultLeaseTTL: 10e9})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	fmt.Fprint(nc, "l\norders\n0\n")
	reply, _ := bufio.NewReader(nc).ReadString('\n')
	f := strings.Fields(reply)
	fmt.Println(f[0], len(f[1]), f[2])
	fmt.Println(srv.Stats().Locks[0].Key)
	// Output:
	// ok 32 10
	// orders
}
