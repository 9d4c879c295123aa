package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
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
)

// runRun holds a lock (or a semaphore slot) while a command runs.
func runRun(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	// The command's output and ours may share a writer; os/exec copies
	// into a non-file writer from its own goroutines. A file (a terminal)
	// goes to the command as it is.
	if _, isFile := stderr.(*os.File); !isFile {
		stderr = &lockedWriter{w: stderr}
	}
	fs := flag.NewFlagSet("dflock run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dflock run [-n LIMIT] [--timeout D] [--lease D] [--grace D] KEY -- CMD [ARGS...]")
		fmt.Fprintf(stderr, "exit codes: the command's; %d not acquired in time; %d lock lost (command stopped); 1 dflock error; 2 usage\n", exitNotAcquired, exitLost)
		fs.PrintDefaults()
	}
	var cf clientFlags
	cf.register(fs, getenv)
	limit := fs.Int("n", 0, "take a slot of a semaphore of this many slots instead of a lock")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the lock")
	lease := fs.Duration("lease", 0, "lease to ask for (default: the server's); renewed while the command runs")
	grace := fs.Duration("grace", 10*time.Second, "after the lock is lost: time between SIGTERM and SIGKILL of the command's process group")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) < 2 || (rest[1] == "--" && len(rest) < 3) {
		fs.Usage()
		return 2
	}
	key, command := rest[0], rest[1:]
	if command[0] == "--" {
		command = command[1:]
	}
	cfg, err := cf.config()
	if err != nil {
		fmt.Fprintln(stderr, "dflock run:", err)
		return 1
	}
	c, err := lock.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "dflock run:", err)
		return 1
	}
	defer c.Close()

	opts := []lock.Option{lock.AcquireTimeout(*timeout), lock.LeaseTTL(*lease)}
	l := c.Lock(key, opts...)
	if *limit > 0 {
		l = c.Semaphore(key, *limit, opts...).Lock
	}
	ok, err := l.Acquire(ctx)
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "dflock run:", err)
		return 1
	case !ok:
		fmt.Fprintf(stderr, "dflock run: %q not acquired within %v\n", key, *timeout)
		return exitNotAcquired
	}
	defer l.Close()
	server, _ := c.ServerFor(key)

	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.Env = append(os.Environ(), "DFLOCK_KEY="+key, "DFLOCK_TOKEN="+l.Token(), "DFLOCK_SERVER="+server)
	// Its own process group, so that a lost lock stops the command and
	// everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "dflock run:", err)
		return 1
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pgid := cmd.Process.Pid

	for {
		select {
		case err := <-exited:
			return exitStatus(err)
		case sig := <-sigs:
			syscall.Kill(-pgid, sig.(syscall.Signal))
		case <-l.Lost():
			fmt.Fprintf(stderr, "dflock run: lost %q; stopping the command\n", key)
			syscall.Kill(-pgid, syscall.SIGTERM)
			t := time.NewTimer(*grace)
			select {
			case <-exited:
				t.Stop()
			case <-t.C:
				syscall.Kill(-pgid, syscall.SIGKILL)
				<-exited
			}
			// Whatever the command left in its group goes too.
			syscall.Kill(-pgid, syscall.SIGKILL)
			return exitLost
		}
	}
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
