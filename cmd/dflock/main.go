// Command dflock is the dflock command line.
//
//	dflock bench [flags]     run the benchmark harness (embedded fleet by default)
//	dflock serve [flags]     serve the dflockd protocol from memory (fakeserver)
//	dflock run [-n LIMIT] [--timeout D] [--lease D] [--grace D] {KEY | --all KEY,KEY...} -- CMD ARGS...
//	                         hold a lock (or semaphore slot) while CMD runs
//	dflock stats [--json]    print each server's state
//	dflock where KEY... [--servers a:1,b:2] [--strategy stable|consistent|rendezvous] [--replicas N]
//	                         print the server each key maps to
//
// The commands that talk to servers take --servers, --auth-token-file and
// --tls-ca, also from DFLOCK_SERVERS, DFLOCK_AUTH_TOKEN_FILE and
// DFLOCK_TLS_CA.
//
// Run "dflock COMMAND -h" for a command's flags.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/dflock-go/dflock/lock"
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
  run      hold a lock while a command runs: dflock run [-n LIMIT] {KEY | --all KEY,KEY...} -- CMD ARGS...
  stats    print each server's state
  where    print the server each key maps to (with --replicas N, its N servers)
`

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	name, rest := args[0], args[1:]
	if asksForHelp(rest) {
		// Help is what was asked for: it goes to stdout, to be paged or
		// grepped, as dflock -h does.
		stderr = stdout
	}
	var err error
	switch name {
	case "serve":
		err = runServe(ctx, rest, getenv, stdout, stderr, nil)
	case "bench":
		err = runBench(ctx, rest, getenv, stdout, stderr)
	case "where":
		err = runWhere(rest, getenv, stdout, stderr)
	case "run":
		return runRun(ctx, rest, getenv, stdout, stderr)
	case "stats":
		err = runStats(ctx, rest, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "dflock: unknown command %q\n%s", name, usage)
		return 2
	}
	return exitCode(stderr, name, err)
}

// newFlagSet returns a command's flag set, printing its help to w, with
// a usage that starts with the command's synopsis and what it does.
func newFlagSet(synopsis, about string, w io.Writer) *flag.FlagSet {
	name := strings.Join(strings.Fields(synopsis)[:2], " ")
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n\n%s\n\nflags:\n", synopsis, about)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args with fs. A mistake comes back as a usage error
// for exitCode to report; the flag package would print it bare, without
// the command's prefix, and then the whole help. -h prints the help and
// returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	case err != nil:
		return errUsage{err: plainParseError(fs, err), fs: fs}
	}
	return nil
}

// asksForHelp reports whether a flag before "--" asks for help.
func asksForHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help", "--h":
			return true
		}
	}
	return false
}

// plainParseError says what the flag package calls a "parse error" of a
// number or a boolean in words: which kind of value the flag takes.
func plainParseError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	m := parseErrorFlag.FindStringSubmatch(msg)
	if m == nil {
		return err
	}
	fl := fs.Lookup(m[1])
	if fl == nil {
		return err
	}
	getter, ok := fl.Value.(flag.Getter)
	if !ok {
		return err
	}
	var want string
	switch getter.Get().(type) {
	case int, int64, uint, uint64:
		want = "not a whole number"
	case float64:
		want = "not a number"
	case bool:
		want = "not true or false"
	default:
		return err
	}
	return errors.New(strings.TrimSuffix(msg, "parse error") + want)
}

// parseErrorFlag finds the flag in the flag package's "invalid value "x"
// for flag -n: parse error" (and "invalid boolean value ... for -n").
var parseErrorFlag = regexp.MustCompile(`for (?:flag )?-([^\s:]+): parse error$`)

// errUsage is a problem with the command line, or with the environment
// variables that stand in for flags: exitCode reports it under the
// command's prefix, followed by the command's synopsis when fs is set,
// and exits 2.
type errUsage struct {
	err error
	fs  *flag.FlagSet // nil for bad input, where the synopsis would not help
}

func (e errUsage) Error() string { return e.err.Error() }

func (e errUsage) Unwrap() error { return e.err }

// synopsis is the first paragraph of fs's help: its usage line or lines.
func synopsis(fs *flag.FlagSet) string {
	var b strings.Builder
	out := fs.Output()
	fs.SetOutput(&b)
	fs.Usage()
	fs.SetOutput(out)
	first, _, _ := strings.Cut(b.String(), "\n\n")
	return strings.TrimSuffix(first, "\n")
}

// commandError is a command's error with a hint that knows the command's
// flags, and an exit code of its own.
type commandError struct {
	err  error
	hint string
	code int // 0: the usual 1
}

func (e *commandError) Error() string { return e.err.Error() }

func (e *commandError) Unwrap() error { return e.err }

// Hint says what to change; "" for nothing.
func (e *commandError) Hint() string { return e.hint }

// ExitCode is the code dflock exits with.
func (e *commandError) ExitCode() int { return cmp.Or(e.code, 1) }

// retold is errors said in other words (several summed up) that still
// match each of them with errors.Is, as the hints need.
type retold struct {
	msg  string
	errs []error
}

func (e retold) Error() string   { return e.msg }
func (e retold) Unwrap() []error { return e.errs }

// usageError is a problem with the command line that fs parsed.
func usageError(fs *flag.FlagSet, format string, args ...any) error {
	return errUsage{err: fmt.Errorf(format, args...), fs: fs}
}

// exitCode reports err, prefixed with the command's name, and returns
// the exit code: 0 for success and for -h, 2 for a usage error (followed
// by the command's synopsis) and for input the protocol does not allow,
// 1 otherwise.
func exitCode(stderr io.Writer, command string, err error) int {
	var usageErr errUsage
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usageErr):
		fmt.Fprintf(stderr, "dflock %s: %s\n", command, render(err))
		if usageErr.fs != nil {
			fmt.Fprintf(stderr, "%s\n(dflock %s -h for help)\n", synopsis(usageErr.fs), command)
		}
		return 2
	case errors.Is(err, lock.ErrInvalid):
		// A key or argument refused before anything was sent: bad
		// input, like any other usage error.
		fmt.Fprintf(stderr, "dflock %s: %s\n", command, render(err))
		return 2
	default:
		fmt.Fprintf(stderr, "dflock %s: %s\n", command, render(err))
		// A command that talks to servers gave its error the hint in its
		// own terms (or none, on purpose); asking again would look at a
		// server again.
		var hinted interface{ Hint() string }
		var h string
		if errors.As(err, &hinted) {
			h = hinted.Hint()
		} else {
			h = hint(err, nil)
		}
		if h != "" {
			fmt.Fprintf(stderr, "dflock %s: hint: %s\n", command, h)
		}
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) {
			return coded.ExitCode()
		}
		return 1
	}
}

// dflockVersion is the module version dflock was built from, as the go
// command recorded it ("(devel)" for a build from a work tree).
func dflockVersion() string {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	return "dflock " + v + " (serves the protocol of dflockd v1.10)"
}
