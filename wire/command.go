package wire

import "strconv"

// Command is a request's first line.
type Command uint8

// The commands of the protocol. The zero Command is invalid.
const (
	CmdLock       Command = iota + 1 // "l": TIMEOUT [LEASE]
	CmdRelease                       // "r": TOKEN
	CmdRenew                         // "n": TOKEN [LEASE]
	CmdEnqueue                       // "e": [LEASE]
	CmdWait                          // "w": TIMEOUT
	CmdSemLock                       // "sl": TIMEOUT LIMIT [LEASE]
	CmdSemRelease                    // "sr": TOKEN
	CmdSemRenew                      // "sn": TOKEN [LEASE]
	CmdSemEnqueue                    // "se": LIMIT [LEASE]
	CmdSemWait                       // "sw": TIMEOUT
	CmdStats                         // "stats": key and argument ignored
	CmdAuth                          // "auth": SECRET
	numCommands
)

var commandNames = [numCommands]string{
	CmdLock:       "l",
	CmdRelease:    "r",
	CmdRenew:      "n",
	CmdEnqueue:    "e",
	CmdWait:       "w",
	CmdSemLock:    "sl",
	CmdSemRelease: "sr",
	CmdSemRenew:   "sn",
	CmdSemEnqueue: "se",
	CmdSemWait:    "sw",
	CmdStats:      "stats",
	CmdAuth:       "auth",
}

// String returns the command as it appears on the wire ("l", "sl", "stats").
func (c Command) String() string {
	if c == 0 || c >= numCommands {
		return "cmd(" + strconv.Itoa(int(c)) + ")"
	}
	return commandNames[c]
}

// ParseCommand maps a command line to its Command; false for an unknown one.
func ParseCommand(b []byte) (Command, bool) {
	for c := CmdLock; c < numCommands; c++ {
		if string(b) == commandNames[c] {
			return c, true
		}
	}
	return 0, false
}

// Semaphore reports whether the command belongs to the semaphore family.
func (c Command) Semaphore() bool { return c >= CmdSemLock && c <= CmdSemWait }

// Family is the set of commands that act on one kind of key: locks, or
// semaphores.
type Family struct {
	// Acquire takes the key, waiting up to a timeout (l, sl).
	Acquire Command
	// Release gives a held key back (r, sr).
	Release Command
	// Renew extends a holder's lease (n, sn).
	Renew Command
	// Enqueue takes the key if it is free, and otherwise joins its
	// queue without waiting (e, se).
	Enqueue Command
	// Wait waits for an enqueued request's grant (w, sw).
	Wait Command
}

// The two families.
var (
	LockFamily      = Family{CmdLock, CmdRelease, CmdRenew, CmdEnqueue, CmdWait}
	SemaphoreFamily = Family{CmdSemLock, CmdSemRelease, CmdSemRenew, CmdSemEnqueue, CmdSemWait}
)

// FamilyOf returns the family c belongs to (locks for stats and auth).
func FamilyOf(c Command) *Family {
	if c.Semaphore() {
		return &SemaphoreFamily
	}
	return &LockFamily
}

// grants reports whether a success reply carries TOKEN LEASE.
func (c Command) grants() bool {
	switch c {
	case CmdLock, CmdWait, CmdSemLock, CmdSemWait, CmdEnqueue, CmdSemEnqueue:
		return true
	}
	return false
}

// Blocking reports whether the server may hold the connection while it
// handles the request: a lock with a timeout above zero, or a wait. Every
// request queued behind a blocking one on the same connection waits too.
func (r *Request) Blocking() bool {
	switch r.Cmd {
	case CmdLock, CmdSemLock:
		return r.Timeout > 0
	case CmdWait, CmdSemWait:
		return true
	}
	return false
}
