package main

import (
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// terminal is dflock's controlling terminal, when dflock run's standard
// input is that terminal: the case where the command may be interactive
// and dflock plays the part of a job-control shell towards it.
type terminal struct {
	fd int
}

// stdinTerminal returns the terminal on standard input if it is dflock's
// controlling terminal, nil otherwise (a file, a pipe, another terminal).
func stdinTerminal() *terminal {
	// TIOCGPGRP fails with ENOTTY for anything but the controlling
	// terminal, so it is the test for both.
	if _, err := unix.IoctlGetInt(syscall.Stdin, unix.TIOCGPGRP); err != nil {
		return nil
	}
	return &terminal{fd: syscall.Stdin}
}

// inForeground reports whether dflock's process group is the terminal's
// foreground group: typed at the terminal, not started with & or put in
// the background with bg.
func (t *terminal) inForeground() bool {
	pgrp, err := unix.IoctlGetInt(t.fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// setForeground makes pgrp the terminal's foreground group. dflock may be
// in the background when it does (the command has the terminal), where
// the kernel would stop it with SIGTTOU instead, unless the signal is
// blocked: it is, on this thread, for the call.
func (t *terminal) setForeground(pgrp int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var block, old unix.Sigset_t
	// SIGTTOU is below 32: bit SIGTTOU-1 of the first word, whatever the
	// word's size.
	block.Val[0] = 1 << (unix.SIGTTOU - 1)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &block, &old); err != nil {
		return err
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	return unix.IoctlSetPointerInt(t.fd, unix.TIOCSPGRP, pgrp)
}

// takeBack gives the terminal back to dflock's group if the command's
// group pgid has it. If someone else has it (the shell, after bg), it
// stays theirs.
func (t *terminal) takeBack(pgid int) {
	if pgrp, err := unix.IoctlGetInt(t.fd, unix.TIOCGPGRP); err == nil && pgrp == pgid {
		t.setForeground(unix.Getpgrp())
	}
}

// reclaim gives the terminal back to dflock's group whoever has it; for
// when dflock had it and a child that no longer exists took it.
func (t *terminal) reclaim() {
	if !t.inForeground() {
		t.setForeground(unix.Getpgrp())
	}
}

// cldStopped is CLD_STOPPED, the si_code of waitid's report of a child
// stopped by a signal.
const cldStopped = 5

// stopWatcher reports the stops of one child process until it exits.
type stopWatcher struct {
	// stopped receives a value after the child stopped; stops that come
	// before the last one was received are folded into it.
	stopped chan struct{}
	done    chan struct{}
}

// watchStops watches the child pid for stops. It must be called before
// the child is reaped (before cmd.Wait), and leaves the reaping to
// cmd.Wait. Where the kernel lacks pidfds it watches nothing.
func watchStops(pid int) *stopWatcher {
	w := &stopWatcher{stopped: make(chan struct{}, 1), done: make(chan struct{})}
	// A pidfd, unlike the pid, cannot come to name another process once
	// cmd.Wait has reaped this one.
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		close(w.done)
		return w
	}
	go func() {
		defer close(w.done)
		defer unix.Close(fd)
		for {
			var info unix.Siginfo
			// WNOWAIT: the exit stays for cmd.Wait to collect. The wait
			// ends when the child exits, or at once with ECHILD if
			// cmd.Wait has collected it already.
			err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WSTOPPED|unix.WNOWAIT, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || info.Code != cldStopped {
				return
			}
			// Collect this stop, so that the next wait is for the next
			// event rather than this stop again.
			unix.Waitid(unix.P_PIDFD, fd, &info, unix.WSTOPPED|unix.WNOHANG, nil)
			select {
			case w.stopped <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// wait returns once the watcher has ended, which it does when the child
// exits.
func (w *stopWatcher) wait() { <-w.done }

// suspend stops dflock as ^Z would (SIGTSTP) and returns once it is
// continued. Where the kernel discards the signal, as it does for an
// orphaned process group with no job-control shell to resume it, or
// when dflock was started with SIGTSTP ignored, suspend returns at once.
func suspend() {
	// Sent to this thread, the signal is acted on before tgkill returns,
	// so dflock has been stopped and continued by then; sent to the
	// process, another thread could take it and this one run on.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGTSTP)
}
