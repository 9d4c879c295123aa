//go:build !linux

package main

// terminal is dflock's controlling terminal. Handing it to the command
// is implemented on Linux only; elsewhere dflock run never sees one, and
// the command runs in its own process group without the terminal.
type terminal struct {
	fd int
}

func stdinTerminal() *terminal { return nil }

func (t *terminal) inForeground() bool { return false }

func (t *terminal) setForeground(pgrp int) error { return nil }

func (t *terminal) takeBack(pgid int) {}

func (t *terminal) reclaim() {}

type stopWatcher struct {
	stopped chan struct{}
}

func watchStops(pid int) *stopWatcher { return &stopWatcher{} }

func (w *stopWatcher) wait() {}

func suspend() {}
