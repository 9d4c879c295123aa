//go:build unix

package bench

import (
	"syscall"
	"time"
)

// cpuTime is this process's CPU time so far, user and system, every
// thread included: the Go runtime spreads a client's work (and its
// garbage collection) over threads no goroutine can account for alone.
func cpuTime() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
