package wire

import (
	"encoding/json"
	"fmt"
)

// Stats is the document a server answers to "stats".
type Stats struct {
	// Connections is how many connections the server has open.
	Connections int `json:"connections"`
	// Locks are the locks with a holder or waiters.
	Locks []LockInfo `json:"locks"`
	// Semaphores are the semaphores with a holder or waiters.
	Semaphores []SemaphoreInfo `json:"semaphores"`
	// IdleLocks are the locks with neither, still tracked until the
	// server's GC collects them.
	IdleLocks []IdleInfo `json:"idle_locks"`
	// IdleSemaphores are the semaphores with neither, still tracked
	// until the server's GC collects them.
	IdleSemaphores []IdleInfo `json:"idle_semaphores"`
}

// LockInfo describes a key of limit 1 that has a holder or waiters.
type LockInfo struct {
	// Key is the lock's name.
	Key string `json:"key"`
	// OwnerConnID is the server's id of the holder's connection; 0 when
	// only waiters are left.
	OwnerConnID uint64 `json:"owner_conn_id"`
	// LeaseExpiresInS is how many seconds are left of the holder's
	// lease, as the server counts it (from the grant or the last
	// renewal).
	LeaseExpiresInS float64 `json:"lease_expires_in_s"`
	// Waiters is how many requests wait in the key's queue.
	Waiters int `json:"waiters"`
}

// SemaphoreInfo describes a key of limit above 1 that has holders or
// waiters.
type SemaphoreInfo struct {
	// Key is the semaphore's name.
	Key string `json:"key"`
	// Limit is how many slots it has, set by its first acquirer.
	Limit int `json:"limit"`
	// Holders is how many of its slots are held.
	Holders int `json:"holders"`
	// Waiters is how many requests wait in its queue.
	Waiters int `json:"waiters"`
}

// IdleInfo describes a key with no holder and no waiter, still counted
// against max-locks until the server collects it.
type IdleInfo struct {
	// Key is the key's name.
	Key string `json:"key"`
	// IdleS is how many seconds have passed since it was last used.
	IdleS float64 `json:"idle_s"`
}

// ParseStats decodes the body of a stats reply.
func ParseStats(body string) (Stats, error) {
	var s Stats
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		return Stats{}, fmt.Errorf("%w: stats body: %v", ErrMalformedReply, err)
	}
	return s, nil
}

// AppendStats appends s as a stats body, with empty lists as [] (never
// null), as the server writes it.
func AppendStats(dst []byte, s Stats) ([]byte, error) {
	if s.Locks == nil {
		s.Locks = []LockInfo{}
	}
	if s.Semaphores == nil {
		s.Semaphores = []SemaphoreInfo{}
	}
	if s.IdleLocks == nil {
		s.IdleLocks = []IdleInfo{}
	}
	if s.IdleSemaphores == nil {
		s.IdleSemaphores = []IdleInfo{}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}
