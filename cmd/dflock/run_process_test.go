package main

import (
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// asDflockEnv, set to 1, makes the test binary the dflock command: tests
// run dflock as a process of its own (its own signals, its own
// terminal) without building it.
const asDflockEnv = "DFLOCK_TEST_AS_DFLOCK"

func init() {
	if os.Getenv(asDflockEnv) == "1" {
		main() // exits
	}
}

// dflockCommand is dflock with args, as a command to start.
func dflockCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, args...)
	// Under -race, a binary sleeps a second at exit unless told not to.
	cmd.Env = append(os.Environ(), asDflockEnv+"=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	return cmd
}

// process is a started command and its end.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startProcess starts cmd; the test's cleanup kills it if it still runs.
func startProcess(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	require.NoError(t, cmd.Start())
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// exitCode waits up to d for the process to end and returns its exit
// code (-1 if a signal killed it).
func (p *process) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("%v still running after %v", p.cmd.Args, d)
		return 0
	}
}

// killGroupOnFailure kills what may be left of the command's process
// group if the test fails, so that a failure leaves no process behind.
func killGroupOnFailure(t *testing.T, pgid int) {
	t.Cleanup(func() {
		if t.Failed() && pgid > 0 {
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
}

// readPid polls for a file holding a pid and a newline, written by a
// command once it is ready.
func readPid(t *testing.T, path string, p *process) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "%s never written", path)
	return pid
}

// A signal sent to dflock reaches the command's process group; dflock
// exits with the command's status and releases the lock.
func TestRunForwardsSignalsToTheCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"TERM", syscall.SIGTERM}, {"INT", syscall.SIGINT}, {"HUP", syscall.SIGHUP}} {
		t.Run(tc.name, func(t *testing.T) {
			if signal.Ignored(tc.sig) {
				// dflock and its command would inherit that: dflock
				// leaves the signal alone, and sh cannot trap it.
				t.Skipf("SIG%s is ignored in this test's environment", tc.name)
			}
			srv := startServer(t)
			dir := t.TempDir()
			// The command records the signal it got, and stops its
			// background sleep (which ignores SIGINT: sh starts it so).
			script := `on() { echo "$1" > got; kill $pid 2>/dev/null; exit 7; }
trap 'on INT' INT; trap 'on TERM' TERM; trap 'on HUP' HUP
sleep 30 & pid=$!
echo $$ > ready
wait`
			cmd := dflockCommand(t, "run", "--servers", srv.Addr(), "k", "--", "sh", "-c", script)
			cmd.Dir = dir
			p := startProcess(t, cmd)
			killGroupOnFailure(t, readPid(t, filepath.Join(dir, "ready"), p))
			require.Len(t, srv.Stats().Locks, 1, "held while the command runs")

			require.NoError(t, cmd.Process.Signal(tc.sig))
			assert.Equal(t, 7, p.exitCode(t, 10*time.Second), "the command's exit code")
			b, err := os.ReadFile(filepath.Join(dir, "got"))
			require.NoError(t, err)
			assert.Equal(t, tc.name, strings.TrimSpace(string(b)))
			require.Eventually(t, func() bool { return len(srv.Stats().Locks) == 0 }, 5*time.Second, 10*time.Millisecond, "released")
		})
	}
}
