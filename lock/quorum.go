package lock

// Quorum is how many of a key's replicas a holder must hold for a lock
// or semaphore of limit slots replicated on replicas servers, so that
// the servers, each admitting at most limit holders, can never together
// admit limit+1 holders at quorum:
//
//	Quorum(replicas, limit) = ⌊replicas·limit / (limit+1)⌋ + 1
//
// Why it is enough: each replica grants at most limit slots, so all
// replicas together grant at most replicas·limit. limit+1 holders that
// each hold q replicas hold (limit+1)·q slots, which must fit:
// (limit+1)·q ≤ replicas·limit, that is q ≤ replicas·limit/(limit+1).
// A q one above the largest whole number that fits cannot.
//
// Why nothing smaller is: with q = ⌊replicas·limit/(limit+1)⌋, lay the
// (limit+1)·q ≤ replicas·limit grants out round-robin over the replicas
// (holder h takes replicas h·q, h·q+1, ... modulo replicas). No replica
// gets more than limit of them, and no holder the same replica twice
// (q ≤ replicas), so limit+1 holders each hold q replicas.
//
// For a lock (limit 1) it is a majority, ⌊replicas/2⌋+1. For a
// semaphore it grows with the limit: 3 replicas with limit 2 need all 3
// (a majority of 2 would let three holders each hold 2 of the 3), so
// such a semaphore survives no server; 5 replicas with limit 2 need 4.
// It is at most replicas, and 1 for a single replica. Both arguments
// are at least 1; for anything else the result means nothing.
func Quorum(replicas, limit int) int {
	return replicas*limit/(limit+1) + 1
}
