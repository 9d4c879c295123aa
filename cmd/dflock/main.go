// Command dflock is the dflock command line.
//
//	dflock serve [flags]     serve the dflockd protocol from memory (fakeserver)
//	dflock where KEY... [--servers a:1,b:2] [--strategy stable|consistent|rendezvous]
//	                         print the server each key maps to
//
// Run "dflock COMMAND -h" for a command's flags.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: dflock <command> [flags]

commands:
  serve    run an in-memory dflockd (same flags and DFLOCKD_* variables as the real server)
  where    print the server each key maps to
`

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return exitCode(stderr, runServe(ctx, args[1:], getenv, stderr, nil))
	case "where":
		return exitCode(stderr, runWhere(args[1:], getenv, stdout, stderr))
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "dflock: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

// errUsage marks an error already reported by a flag set.
type errUsage struct{ error }

func exitCode(stderr io.Writer, err error) int {
	switch err.(type) {
	case nil:
		return 0
	case errUsage:
		return 2
	default:
		fmt.Fprintln(stderr, "dflock:", err)
		return 1
	}
}
