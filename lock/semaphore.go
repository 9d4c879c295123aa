package lock

// Semaphore is a handle on one slot of a key shared by up to Limit
// holders. It has the whole surface of Lock (Acquire, TryAcquire,
// Release, Close, Token, Lease, Lost, Enqueue, Wait) over the semaphore
// commands. Every client of a key must use the same limit; another limit
// gets ErrLimitMismatch.
type Semaphore struct {
	*Lock
}

// Limit returns the number of slots.
func (s *Semaphore) Limit() int { return s.limit }
