package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/dflock-go/dflock/fakeserver"
)

// FleetEnv is set in the environment of the process Config.FleetCommand
// starts, to the number of servers to run. A program that sets
// FleetCommand must check for it first thing and then call ServeFleet
// instead of doing its usual work.
const FleetEnv = "DFLOCK_BENCH_FLEET"

// fleetLine prefixes the one line a fleet process writes: its addresses.
const fleetLine = "FLEET "

func startEmbeddedFleet(n int) (*fakeserver.Fleet, error) {
	return fakeserver.StartFleet(n, fakeserver.Config{MaxLocks: -1})
}

// embeddedServers is the size of the embedded fleet: 3, and 4 for the
// reshard run, which takes the last one out and puts it back.
func embeddedServers(cfg Config) int {
	if cfg.Reshard {
		return 4
	}
	return 3
}

// ServeFleet serves the harness's embedded fleet for the process that
// started this one with Config.FleetCommand: it writes the fleet's
// addresses to w, then serves until r ends, which happens when that
// process closes the pipe or dies, so a fleet never outlives its run.
func ServeFleet(r io.Reader, w io.Writer) error {
	n, err := strconv.Atoi(os.Getenv(FleetEnv))
	if err != nil || n < 1 {
		n = 3
	}
	fleet, err := startEmbeddedFleet(n)
	if err != nil {
		return err
	}
	defer fleet.Close()
	if _, err := fmt.Fprintf(w, "%s%s\n", fleetLine, strings.Join(fleet.Addrs(), ",")); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, r)
	return err
}

// ServeFleetIfAsked makes a process that Config.FleetCommand started
// serve the fleet (ServeFleet on stdin and stdout) and exit; in any other
// process it returns at once. A test binary that names itself as the
// FleetCommand calls it first thing in TestMain.
func ServeFleetIfAsked() {
	if os.Getenv(FleetEnv) == "" {
		return
	}
	if err := ServeFleet(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// firstLine hands on the first line written to it and drops the rest, so
// that a chatty fleet process can never block on a full pipe.
type firstLine struct {
	buf  []byte
	sent bool
	line chan string
}

func (f *firstLine) Write(p []byte) (int, error) {
	if f.sent {
		return len(p), nil
	}
	f.buf = append(f.buf, p...)
	if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
		f.line <- string(f.buf[:i])
		f.sent, f.buf = true, nil
	}
	return len(p), nil
}

// fleetStartTimeout bounds how long a fleet process may take to report
// its addresses; it only starts three listeners.
const fleetStartTimeout = 30 * time.Second

// startChildFleet runs cmd as a fleet process and returns its addresses
// and a stop that ends it.
func startChildFleet(ctx context.Context, cmd *exec.Cmd, servers int) ([]string, func() error, error) {
	cmd.Env = append(cmd.Environ(), FleetEnv+"="+strconv.Itoa(servers))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	first := &firstLine{line: make(chan string, 1)}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = first, &stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting the fleet process: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// stderr is safe to read only once exited has fired: Wait has then
	// finished copying into it.
	kill := func(why error) error {
		stdin.Close()
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("fleet process %s: %w: %s", cmd.Path, why, strings.TrimSpace(stderr.String()))
	}
	timeout := time.NewTimer(fleetStartTimeout)
	defer timeout.Stop()
	var line string
	select {
	case line = <-first.line:
	case err := <-exited:
		if err == nil {
			err = errors.New("exited")
		}
		return nil, nil, fmt.Errorf("fleet process %s: before serving: %w: %s", cmd.Path, err, strings.TrimSpace(stderr.String()))
	case <-ctx.Done():
		return nil, nil, kill(ctx.Err())
	case <-timeout.C:
		return nil, nil, kill(errors.New("no addresses after " + fleetStartTimeout.String()))
	}
	addrs, ok := strings.CutPrefix(line, fleetLine)
	if !ok || addrs == "" {
		return nil, nil, kill(fmt.Errorf("wrote %q, not its addresses (does it call bench.ServeFleet when %s is set?)", line, FleetEnv))
	}
	stop := func() error {
		stdin.Close()
		select {
		case err := <-exited:
			return err
		case <-time.After(fleetStartTimeout):
			return kill(errors.New("still running after its stdin closed"))
		}
	}
	return strings.Split(addrs, ","), stop, nil
}
