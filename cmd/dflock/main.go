// Command dflock is the dflock command line.
//
//	dflock bench [flags]     run the benchmark harness (embedded fleet by default)
//	dflock serve [flags]     serve the dflockd protocol from memory (fakeserver)
//	dflock run [-n LIMIT] [--timeout D] [--lease D] [--grace D] KEY -- CMD ARGS...
//	                         hold a lock (or semaphore slot) while CMD runs
//	dflock stats [--json]    print each server's state
//	dflock where KEY... [--servers a:1,b:2] [--strategy stable|consistent|rendezvous]
//	                         print the server each key maps to
//
// The commands that talk to servers take --servers, --auth-token-file and
// --tls-ca, also from DFLOCK_SERVERS, DFLOCK_AUTH_TOKEN_FILE and
// DFLOCK_TLS_CA.
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
  bench    measure dflock against an embedded fleet (or --servers) and print a report
  serve    run an in-memory dflockd (same flags and DFLOCKD_* variables as the real server)
  run      hold a lock while a command runs: dflock run [-n LIMIT] KEY -- CMD ARGS...
  stats    print each server's state
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
	case "bench":
		return exitCode(stderr, runBench(ctx, args[1:], getenv, stdout, stderr))
	case "where":
		return exitCode(stderr, runWhere(args[1:], getenv, stdout, stderr))
	case "run":
		return runRun(ctx, args[1:], getenv, stdout, stderr)
	case "stats":
		return exitCode(stderr, runStats(ctx, args[1:], getenv, stdout, stderr))
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
