package wire_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dflock-go/dflock/wire"
)

// A client encodes a lock request, reads one reply line and turns it into a
// typed response.
func Example() {
	req := wire.Request{Cmd: wire.CmdLock, Key: "orders", Timeout: 10, Lease: 30}
	frame, err := req.Append(nil)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q\n", frame)

	lr := wire.NewLineReader(strings.NewReader("ok 0123456789abcdef0123456789abcdef 30\ntimeout\n"), wire.MaxResponseLen)
	line, _ := lr.ReadLine()
	resp, _ := wire.ParseResponse(req.Cmd, line)
	fmt.Println(resp.Status, resp.Token, resp.Lease)

	line, _ = lr.ReadLine()
	resp, _ = wire.ParseResponse(req.Cmd, line)
	fmt.Println(errors.Is(resp.Err(), wire.ErrTimeout))
	// Output:
	// "l\norders\n10 30\n"
	// ok 0123456789abcdef0123456789abcdef 30
	// true
}

// Invalid input is refused before anything is sent, with the rule it broke.
func ExampleRequest_Append() {
	req := wire.Request{Cmd: wire.CmdLock, Key: "my key", Timeout: 10}
	_, err := req.Append(nil)
	fmt.Println(err)
	fmt.Println(errors.Is(err, wire.ErrInvalidRequest))
	// Output:
	// wire: l: invalid key "my key": must not contain a space
	// true
}
