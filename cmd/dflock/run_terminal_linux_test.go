package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/dflock-go/dflock/fakeserver"
)

// pty is a pseudo-terminal's controlling end, with everything written
// to the terminal collected.
type pty struct {
	ptm  *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// openPTY opens a pseudo-terminal and returns its controlling end and
// the terminal itself, for a process to run on.
func openPTY(t *testing.T) (*pty, *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	var name string
	err = control(ptm, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil { // unlockpt
			return err
		}
		n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN) // ptsname
		name = fmt.Sprintf("/dev/pts/%d", n)
		return err
	})
	if err != nil {
		ptm.Close()
		t.Fatal(err)
	}
	tty, err := os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		t.Fatal(err)
	}
	p := &pty{ptm: ptm, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		// Ends with EIO once no process has the terminal open, or when
		// the cleanup closes ptm.
		io.Copy(p, ptm)
	}()
	t.Cleanup(func() {
		tty.Close()
		ptm.Close()
		<-p.done
	})
	return p, tty
}

// control runs fn on the file's descriptor without taking the file out
// of the runtime's poller, as File.Fd would.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func (p *pty) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// String is what was written to the terminal so far.
func (p *pty) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// typeIn writes s as if typed at the terminal.
func (p *pty) typeIn(t *testing.T, s string) {
	t.Helper()
	_, err := p.ptm.Write([]byte(s))
	require.NoError(t, err)
}

// waitFor polls until the terminal shows s.
func (p *pty) waitFor(t *testing.T, s string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(p.String(), s) }, 10*time.Second, 10*time.Millisecond,
		"the terminal never showed %q; it shows:\n%s", s, p)
}

// foreground is the terminal's foreground process group.
func (p *pty) foreground() int {
	pgrp := -1
	control(p.ptm, func(fd int) (err error) {
		pgrp, err = unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		return err
	})
	return pgrp
}

// startOnTerminal starts cmd as a session leader with tty as its
// controlling terminal and standard streams, as a login shell is.
func startOnTerminal(t *testing.T, cmd *exec.Cmd, tty *os.File) *process {
	t.Helper()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	p := startProcess(t, cmd)
	// Only the started process has the terminal open now, so reading the
	// other end ends when it and its children are gone.
	tty.Close()
	return p
}

// commandInForeground waits for dflock's command to have the terminal:
// for a foreground group that is neither none nor leader's, the process
// group of the session leader (dflock itself, or the shell that started
// it). It returns that group.
func commandInForeground(t *testing.T, term *pty, leader *process) int {
	t.Helper()
	var pgrp int
	require.Eventually(t, func() bool {
		pgrp = term.foreground()
		return pgrp > 0 && pgrp != leader.cmd.Process.Pid
	}, 10*time.Second, 10*time.Millisecond, "the command never got the terminal; it shows:\n%s", term)
	killGroupOnFailure(t, pgrp)
	return pgrp
}

// requireReleased waits for the server to have no lock held or wanted.
func requireReleased(t *testing.T, srv *fakeserver.Server) {
	t.Helper()
	require.Eventually(t, func() bool { return len(srv.Stats().Locks) == 0 }, 5*time.Second, 10*time.Millisecond, "the lock was not released")
}

// A command that reads the terminal gets it: `dflock run k -- head -n1`
// typed at a terminal reads the next line and ends.
func TestRunGivesTheCommandTheTerminal(t *testing.T) {
	srv := startServer(t)
	term, tty := openPTY(t)
	dflock := startOnTerminal(t, dflockCommand(t, "run", "--servers", srv.Addr(), "k", "--", "head", "-n1"), tty)
	commandInForeground(t, term, dflock)
	require.Len(t, srv.Stats().Locks, 1, "held while the command runs")

	term.typeIn(t, "hello\n")
	assert.Equal(t, 0, dflock.exitCode(t, 10*time.Second), term.String())
	term.waitFor(t, "hello\r\nhello\r\n") // echoed as typed, then printed by head
	requireReleased(t, srv)
}

// ^C typed at the terminal goes to the command, which dies of SIGINT;
// dflock releases the lock and exits 130, as a shell reports it.
func TestRunInterruptFromTheTerminal(t *testing.T) {
	srv := startServer(t)
	term, tty := openPTY(t)
	dflock := startOnTerminal(t, dflockCommand(t, "run", "--servers", srv.Addr(), "k", "--", "sleep", "30"), tty)
	commandInForeground(t, term, dflock)
	require.Len(t, srv.Stats().Locks, 1, "held while the command runs")

	term.typeIn(t, "\x03") // ^C
	assert.Equal(t, 128+int(syscall.SIGINT), dflock.exitCode(t, 10*time.Second), term.String())
	requireReleased(t, srv)
}

// Under a job-control shell, a command stopped as by ^Z stops dflock's
// job too, lock still held; fg resumes both, the command with the
// terminal, and dflock gives it back when the command ends.
func TestRunSuspendAndResume(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("needs bash, for job control")
	}
	srv := startServer(t)
	term, tty := openPTY(t)
	// set -m: job control in a script, as in an interactive shell. If
	// dflock took the terminal back from the background without blocking
	// SIGTTOU, the shell would see its job stop a second time.
	script := `set -m
"$0" run --servers ` + srv.Addr() + ` k -- sh -c 'kill -TSTP $$; echo resumed; head -n1'
echo "stopped=$?"
fg >/dev/null
echo "rc=$?"`
	dflock := dflockCommand(t)
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", script, dflock.Path)
	cmd.Env = dflock.Env
	shell := startOnTerminal(t, cmd, tty)

	term.waitFor(t, "stopped=")
	assert.Contains(t, term.String(), fmt.Sprintf("stopped=%d", 128+int(syscall.SIGTSTP)), "the shell saw the job stop")
	assert.Len(t, srv.Stats().Locks, 1, "held while suspended")
	term.waitFor(t, "resumed")
	commandInForeground(t, term, shell)
	term.typeIn(t, "hello\n")
	assert.Equal(t, 0, shell.exitCode(t, 10*time.Second), term.String())
	term.waitFor(t, "rc=")
	assert.Contains(t, term.String(), "rc=0", "dflock's exit code after fg")
	requireReleased(t, srv)
}

// A lost lock stops a command that has the terminal as it stops any.
func TestRunLostLockStopsTheTerminalCommand(t *testing.T) {
	srv := startServer(t)
	term, tty := openPTY(t)
	dflock := startOnTerminal(t, dflockCommand(t, "run", "--servers", srv.Addr(), "--grace", "5s", "k", "--", "sleep", "30"), tty)
	commandInForeground(t, term, dflock)
	require.Len(t, srv.Stats().Locks, 1, "held while the command runs")

	srv.DropConnections()
	assert.Equal(t, exitLost, dflock.exitCode(t, 10*time.Second), term.String())
	term.waitFor(t, `dflock run: lost "k"; stopping the command`)
}
