package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dflock-go/dflock/lock"
)

// Exit codes of dflock run besides the command's own.
const (
	// exitNotAcquired: the lock was not acquired within --timeout
	// (EX_TEMPFAIL: try again later).
	exitNotAcquired = 75
	// exitLost: the lock was lost while the command ran; the command was
	// stopped.
	exitLost = 76
	// exitCannotExecute: the command was found but could not be run, as
	// shells report it.
	exitCannotExecute = 126
	// exitNotFound: there is no such command, as shells report it.
	exitNotFound = 127
)

const runUsage = "usage: dflock run [-n LIMIT] [--timeout D] [--lease D] [--grace D] [--replicas N] [--servers LIST | --fleet FILE] [--metrics-addr ADDR] {KEY | --all KEY,KEY...} -- CMD [ARGS...]"

// runSignals are the signals dflock passes on to the command's process
// group. Without that, a hangup or ^\ that reaches dflock rather than
// the command would end dflock and leave the command running unlocked.
var runSignals = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM}

// runFlags is a parsed dflock run command line.
type runFlags struct {
	client   clientFlags
	limit    int // 0: a lock; above 0: a slot of a semaphore of this many
	replicas int
	timeout  time.Duration
	lease    time.Duration // 0: the server's default
	grace    time.Duration
	metrics  string // --metrics-addr
	key      string
	all      []string // --all: every key, held together; key is then ""
	command  []string
}

// parseRunFlags parses and checks a dflock run command line. It prints
// the help to w and returns flag.ErrHelp for -h, and otherwise returns a
// usage error.
func parseRunFlags(args []string, getenv func(string) string, w io.Writer) (runFlags, error) {
	f, set, err := parseRunCommandLine(args, getenv, w)
	var usageErr errUsage
	if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.As(err, &usageErr) {
		err = errUsage{err: err, fs: set}
	}
	return f, err
}

// parseRunCommandLine is parseRunFlags but for the kind of its errors.
func parseRunCommandLine(args []string, getenv func(string) string, w io.Writer) (runFlags, *flag.FlagSet, error) {
	var f runFlags
	set := flag.NewFlagSet("dflock run", flag.ContinueOnError)
	set.SetOutput(w)
	set.Usage = func() { printRunHelp(set.Output(), set) }
	f.client.register(set, getenv)
	f.client.registerFleet(set, getenv)
	set.IntVar(&f.limit, "n", 0, "take a slot of a semaphore of this many slots (at least 1) instead of the lock")
	set.StringVar(&f.metrics, "metrics-addr", getenv("DFLOCK_METRICS_ADDR"), "serve the client's metrics as Prometheus text on http://ADDR/metrics while CMD runs (env DFLOCK_METRICS_ADDR)")
	durationVar(set, &f.timeout, "timeout", 10*time.Second, "how long to wait for the lock; 0 tries once (sent in whole seconds, rounded up)")
	durationVar(set, &f.lease, "lease", 0, "lease to ask for, at least 1s, rounded up to whole seconds (default: the server's); renewed while the command runs")
	if err := replicasFlag(set, &f.replicas, "hold the lock on a quorum of this many servers (odd; see above)", getenv); err != nil {
		return f, set, errUsage{err: err}
	}
	durationVar(set, &f.grace, "grace", 10*time.Second, "after the lock is lost: time between SIGTERM and SIGKILL of the command's process group")
	all := set.String("all", "", "hold every one of these keys (comma-separated) in place of KEY, all or none, without deadlock against other sets (see above); the command then follows --")
	if err := parseFlags(set, args); err != nil {
		return f, set, err
	}
	if err := f.client.fleetConflict(set); err != nil {
		return f, set, err
	}
	limitSet := false
	set.Visit(func(fl *flag.Flag) { limitSet = limitSet || fl.Name == "n" })
	switch {
	case limitSet && f.limit < 1:
		return f, set, fmt.Errorf("-n %d: a semaphore has at least 1 slot", f.limit)
	case f.timeout < 0:
		return f, set, fmt.Errorf("--timeout %v must not be negative", f.timeout)
	case f.lease < 0:
		return f, set, fmt.Errorf("--lease %v must not be negative", f.lease)
	case f.lease > 0 && f.lease < time.Second:
		// The protocol counts leases in whole seconds. Rounding up would
		// keep the lock, after a crash, for longer than someone asking
		// for less than a second expects.
		return f, set, fmt.Errorf("--lease %v: the server counts leases in whole seconds; ask for at least 1s", f.lease)
	case f.grace < 0:
		return f, set, fmt.Errorf("--grace %v must not be negative", f.grace)
	case f.replicas < 1 || f.replicas%2 == 0:
		return f, set, fmt.Errorf("--replicas %d: an odd number of servers (1, 3, 5...)", f.replicas)
	}
	rest := set.Args()
	allSet := false
	set.Visit(func(fl *flag.Flag) { allSet = allSet || fl.Name == "all" })
	if allSet {
		for k := range strings.SplitSeq(*all, ",") {
			f.all = append(f.all, strings.TrimSpace(k))
		}
		if slices.Contains(f.all, "") {
			return f, set, fmt.Errorf("--all %q: an empty key", *all)
		}
		// No KEY: the command follows "--", which the flag package took
		// if it came right after the flags. Without it, a KEY given as
		// well would be run as the command.
		if len(rest) > 0 && args[len(args)-len(rest)-1] != "--" {
			return f, set, fmt.Errorf("%s after the flags: with --all, every key goes in --all, and the command after --", rest[0])
		}
		f.command = rest
		if len(f.command) == 0 {
			return f, set, errors.New("missing command")
		}
		return f, set, nil
	}
	switch {
	case len(rest) == 0:
		return f, set, errors.New("missing KEY and command")
	case len(args) > len(rest) && args[len(args)-len(rest)-1] == "--":
		// "dflock run -- echo hi": the flag package took the "--", and
		// "echo" would be taken for KEY.
		return f, set, fmt.Errorf("missing KEY before -- %s", rest[0])
	case rest[0] == "":
		return f, set, errors.New("empty KEY")
	}
	f.key, f.command = rest[0], rest[1:]
	switch {
	case len(f.command) > 0 && f.command[0] == "--":
		f.command = f.command[1:]
	case len(f.command) > 0 && strings.HasPrefix(f.command[0], "-"):
		// Flags stop at KEY; one after it would otherwise be run as the
		// command.
		return f, set, fmt.Errorf("%s after KEY: flags go before KEY", f.command[0])
	case len(f.command) > 0:
		// "dflock run k1 k2 -- true" would run k2.
		return f, set, fmt.Errorf("%s after KEY: one KEY (or --all KEY,KEY...), then -- and the command", f.command[0])
	}
	if len(f.command) == 0 {
		return f, set, errors.New("missing command")
	}
	return f, set, nil
}

// printRunHelp is what dflock run -h prints: the synopsis, alone in its
// first paragraph as exitCode expects, then the details and the flags.
func printRunHelp(w io.Writer, set *flag.FlagSet) {
	fmt.Fprintln(w, runUsage)
	fmt.Fprintf(w, `
Holds the lock KEY (with -n, a slot of the semaphore KEY) while CMD runs in its
own process group, with DFLOCK_KEY, DFLOCK_TOKEN and DFLOCK_SERVER set. The
lease is renewed while CMD runs; if the lock is lost, CMD's process group gets
SIGTERM, then SIGKILL after --grace. SIGHUP, SIGINT, SIGQUIT and SIGTERM sent
to dflock go to CMD's process group. Typed at a terminal (on Linux, with the
terminal as standard input), CMD gets the terminal while it runs: it can read
it, and ^C, ^\ and ^Z act on CMD (^Z suspends dflock with it; fg or bg
resumes both).

With --replicas N the lock is held on a quorum of the key's N servers (the
key's server and the next ones in --servers order), so that it survives the
loss of a minority of them; a semaphore needs more of them (-n 2 or more on 3
replicas needs all 3). DFLOCK_SERVER then lists the key's N servers, and
DFLOCK_TOKEN is the token, at the start, of the first of them that held it
(each server issues its own).

With --all KEY,KEY... -- CMD every key is held while CMD runs (with -n, a
slot of each), taken all or none within --timeout: keys in byte order, never
waiting for one while holding a later one, so that two runs taking the same
keys in any order cannot deadlock. DFLOCK_KEY, DFLOCK_TOKEN and DFLOCK_SERVER
are then comma-separated lists, one entry per key in byte order (the server:
the key's first). Losing any key stops CMD, as losing the lock does.

With --fleet FILE (or DFLOCK_FLEET) the servers come from a fleet file, which
dflock follows while CMD runs: the lock stays held through a fleet change (see
"Fleet changes" in the lock package), and each step is logged on stderr.
DFLOCK_SERVER and DFLOCK_TOKEN are set when CMD starts, and do not follow.

exit codes: CMD's own (128+N if signal N ended it), %d not acquired in time,
%d lock lost (CMD stopped), %d CMD cannot be executed, %d CMD not found,
1 other dflock error, 2 usage

flags:
`, exitNotAcquired, exitLost, exitCannotExecute, exitNotFound)
	set.PrintDefaults()
}

// runRun holds a lock (or a semaphore slot) while a command runs.
func runRun(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	// The command's output and ours may share a writer; os/exec copies
	// into a non-file writer from its own goroutines. A file (a terminal)
	// goes to the command as it is.
	if _, isFile := stderr.(*os.File); !isFile {
		stderr = &lockedWriter{w: stderr}
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "dflock run: "+format+"\n", a...)
		return code
	}
	f, err := parseRunFlags(args, getenv, stderr)
	if err != nil {
		// -h (its help printed) or a usage error.
		return exitCode(stderr, "run", err)
	}
	// failed reports an error of dflock's own as the other commands do,
	// with the hint they give for it.
	failed := func(err error) int {
		return exitCode(stderr, "run", &commandError{err: err, hint: hint(err, &f.client)})
	}
	// Look for the command before taking the lock: one that cannot run
	// should not take the lock from those waiting for it, even briefly.
	path, err := exec.LookPath(f.command[0])
	if err != nil {
		code, msg := execFailure(f.command[0], f.command[0], err)
		return fail(code, "%s", msg)
	}
	cfg, err := f.client.config()
	if err != nil {
		return failed(err)
	}
	cfg.Replicas = f.replicas
	if f.metrics != "" {
		ms, err := serveMetrics(f.metrics, "dflock run", stderr)
		if err != nil {
			return failed(err)
		}
		defer ms.close()
		cfg.MeterProvider = ms.Provider()
	}
	if cfg.FleetFile != "" {
		// The steps this client takes as the fleet file changes, which
		// operators wait for before the next step (and anything else the
		// client reports), on stderr.
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		}}))
	}
	c, err := lock.New(cfg)
	if err != nil {
		return failed(err)
	}
	defer c.Close()

	opts := []lock.Option{lock.AcquireTimeout(f.timeout), lock.LeaseTTL(f.lease)}
	h, notTaken, err := hold(ctx, c, f, opts)
	switch {
	case err != nil:
		return failed(err)
	case notTaken != "":
		return fail(exitNotAcquired, "%s", notTaken)
	}
	defer h.release()
	cmd := lockedCommand(path, f.command, stdout, stderr, h.key, h.token, h.server)
	return runLocked(cmd, h, h.what, f.grace, stderr, func(err error) string { return hint(err, &f.client) })
}

// wholeSeconds is how long the server waited for a timeout: it counts
// whole seconds, rounded up.
func wholeSeconds(timeout time.Duration) time.Duration {
	return (timeout + time.Second - 1).Truncate(time.Second)
}

// runHold is what dflock run holds while the command runs (a lock, a
// slot, or with --all a set of them), and what the command is told of it:
// DFLOCK_KEY, DFLOCK_TOKEN and DFLOCK_SERVER.
type runHold struct {
	losable
	release            func()
	what               string // for the message if it is lost
	key, token, server string
}

// hold takes what f asks for. When it was not taken in time, notTaken
// says so (exit 75); err is any other failure.
func hold(ctx context.Context, c *lock.Client, f runFlags, opts []lock.Option) (h runHold, notTaken string, err error) {
	if f.all != nil {
		return holdAll(ctx, c, f, opts)
	}
	l := c.Lock(f.key, opts...)
	if f.limit > 0 {
		l = c.Semaphore(f.key, f.limit, opts...).Lock
	}
	ok, err := l.Acquire(ctx)
	switch {
	case err != nil:
		return h, "", err
	case !ok && f.timeout <= 0:
		return h, fmt.Sprintf("%q is taken (not acquired; --timeout 0 tries once)", f.key), nil
	case !ok:
		return h, fmt.Sprintf("%q not acquired within %v", f.key, wholeSeconds(f.timeout)), nil
	}
	// With replicas, every server the key lives on.
	servers, _ := c.ServersFor(f.key)
	return runHold{losable: l, release: func() { l.Close() }, what: fmt.Sprintf("%q", f.key),
		key: f.key, token: l.Token(), server: strings.Join(servers, ",")}, "", nil
}

// holdAll is hold for --all: every key of f.all (a slot of each with -n).
func holdAll(ctx context.Context, c *lock.Client, f runFlags, opts []lock.Option) (h runHold, notTaken string, err error) {
	var s *lock.Set
	if f.limit > 0 {
		s, err = c.SemaphoreAll(ctx, f.all, f.limit, opts...)
	} else {
		s, err = c.LockAll(ctx, f.all, opts...)
	}
	var busy *lock.SetTimeoutError
	switch {
	case errors.As(err, &busy) && f.timeout <= 0:
		return h, fmt.Sprintf("%q is taken (none of the %d keys acquired; --timeout 0 tries once)", busy.Busy, busy.Keys), nil
	case errors.As(err, &busy):
		return h, fmt.Sprintf("%q not acquired within %v (none of the %d keys held)", busy.Busy, wholeSeconds(f.timeout), busy.Keys), nil
	case err != nil:
		return h, "", err
	}
	keys := s.Keys()
	tokens, servers := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		tokens[i] = s.Token(k)
		servers[i], _ = c.ServerFor(k)
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Release(rctx)
	}
	return runHold{losable: s, release: release, what: "a key of " + strings.Join(keys, ","),
		key: strings.Join(keys, ","), token: strings.Join(tokens, ","), server: strings.Join(servers, ",")}, "", nil
}

// lockedCommand is the command at path, run with args under a lock: with
// dflock's own input and outputs, and the lock's key, token and server
// in its environment.
func lockedCommand(path string, args []string, stdout, stderr io.Writer, key, token, server string) *exec.Cmd {
	return &exec.Cmd{
		Path:   path,
		Args:   args,
		Stdin:  os.Stdin,
		Stdout: stdout,
		Stderr: stderr,
		Env:    append(os.Environ(), "DFLOCK_KEY="+key, "DFLOCK_TOKEN="+token, "DFLOCK_SERVER="+server),
	}
}

// losable is what a command runs under: a lock, or a set of them.
type losable interface {
	Lost() <-chan struct{}
	Err() error
}

// runLocked runs cmd while the lock is held and returns dflock's exit
// code: the command's, or exitLost if lost closes first, after stopping
// the command's process group (SIGTERM, then SIGKILL after grace) and
// giving the loss's hint, if hintFor has one.
func runLocked(cmd *exec.Cmd, l losable, what string, grace time.Duration, stderr io.Writer, hintFor func(error) string) int {
	lost := l.Lost()
	// Its own process group, so that a lost lock stops the command and
	// everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Run from an interactive shell, the group gets the terminal as a
	// shell gives it to a foreground job. In a group of its own without
	// it, the command would stop at its first read of the terminal, and
	// ^C would reach only dflock.
	tty := stdinTerminal()
	foreground := tty != nil && tty.inForeground()
	if foreground {
		cmd.SysProcAttr.Foreground = true
		cmd.SysProcAttr.Ctty = tty.fd
	}

	sigs := make(chan os.Signal, len(runSignals))
	for _, s := range runSignals {
		// A signal dflock was started with ignored (nohup, a background
		// job of a script) stays ignored; the command inherits that.
		if !signal.Ignored(s) {
			signal.Notify(sigs, s)
		}
	}
	defer signal.Stop(sigs)

	if err := cmd.Start(); err != nil {
		if foreground {
			// The child gives its group the terminal before it execs; if
			// the exec failed, the terminal is left to a group that is gone.
			tty.reclaim()
		}
		var pe *fs.PathError
		if !errors.As(err, &pe) || pe.Op != "fork/exec" {
			fmt.Fprintf(stderr, "dflock run: starting %s: %v\n", cmd.Args[0], err)
			return 1
		}
		code, msg := execFailure(cmd.Args[0], cmd.Path, err)
		fmt.Fprintf(stderr, "dflock run: %s\n", msg)
		return code
	}
	pgid := cmd.Process.Pid
	var stopped <-chan struct{}
	if tty != nil {
		// Whether or not it started in the foreground, the command may
		// have the terminal when it ends (after fg); it is dflock's again
		// then, for the shell to take back.
		defer tty.takeBack(pgid)
		// Before cmd.Wait can reap the command: the watcher needs it.
		w := watchStops(pgid)
		defer w.wait()
		stopped = w.stopped
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	for {
		select {
		case err := <-exited:
			return exitStatus(err)
		case sig := <-sigs:
			syscall.Kill(-pgid, sig.(syscall.Signal))
		case <-stopped:
			// ^Z stopped the command, or SIGTTIN did when it read the
			// terminal from the background. dflock stops too, so that its
			// shell sees the job stop and can resume it; the command goes
			// on when dflock does, with the terminal if fg gave it back.
			// The lease is not renewed meanwhile: a job suspended for
			// longer loses the lock, and the command is stopped on resume.
			suspend()
			if tty.inForeground() {
				tty.setForeground(pgid)
			}
			syscall.Kill(-pgid, syscall.SIGCONT)
		case <-lost:
			// The loss says "lost" itself; once is enough.
			fmt.Fprintf(stderr, "dflock run: lost %s; stopping the command: %s\n", what, strings.TrimPrefix(render(l.Err()), "lost: "))
			syscall.Kill(-pgid, syscall.SIGTERM)
			// A stopped group would not act on SIGTERM until continued.
			syscall.Kill(-pgid, syscall.SIGCONT)
			t := time.NewTimer(grace)
			select {
			case <-exited:
				t.Stop()
			case <-t.C:
				syscall.Kill(-pgid, syscall.SIGKILL)
				<-exited
			}
			// Whatever the command left in its group goes too.
			syscall.Kill(-pgid, syscall.SIGKILL)
			// Only now: finding the cause may look at the server again,
			// which must not keep the command running unlocked.
			if h := hintFor(l.Err()); h != "" {
				fmt.Fprintf(stderr, "dflock run: hint: %s\n", h)
			}
			return exitLost
		}
	}
}

// execFailure turns a failure to find or start a command into the exit
// code a shell gives it and a message. name is the command as given,
// path where it was found.
func execFailure(name, path string, err error) (int, string) {
	var errno syscall.Errno
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return exitNotFound, name + ": command not found"
	case errors.Is(err, exec.ErrDot):
		// Go refuses, and so does dflock, a command that PATH finds only
		// through a relative entry such as ".".
		return exitCannotExecute, name + ": found only through a relative PATH entry; run it as ./" + name
	case isDir(path):
		return exitCannotExecute, name + ": is a directory"
	case errors.Is(err, fs.ErrNotExist) && exists(path):
		// exec says ENOENT of a file that is there when what is missing
		// is its #! interpreter or its dynamic loader.
		return exitCannotExecute, name + ": cannot execute: its interpreter (#! line) or loader is missing"
	case errors.Is(err, fs.ErrNotExist):
		return exitNotFound, name + ": no such file or directory"
	case errors.Is(err, fs.ErrPermission):
		return exitCannotExecute, name + ": permission denied"
	case errors.As(err, &errno):
		return exitCannotExecute, name + ": cannot execute: " + errno.Error()
	default:
		return exitCannotExecute, name + ": cannot execute: " + err.Error()
	}
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// exitStatus turns the command's end into dflock's exit code: its exit
// code, or 128+N when signal N killed it, as shells report.
func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
