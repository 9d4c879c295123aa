package lock_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/dflock-go/dflock/lock"
)

// TestQuorumKeepsTheLimit checks Quorum against its definition by brute
// force for small fleets and limits: limit+1 holders can never each hold
// Quorum replicas (every replica admitting limit holders at most), and
// with one replica fewer they can.
func TestQuorumKeepsTheLimit(t *testing.T) {
	for replicas := 1; replicas <= 7; replicas++ {
		for limit := 1; limit <= 6; limit++ {
			q := lock.Quorum(replicas, limit)
			name := fmt.Sprintf("R=%d L=%d Q=%d", replicas, limit, q)
			assert.LessOrEqual(t, q, replicas, name)
			assert.False(t, holdersFit(replicas, limit, limit+1, q), "%s: limit+1 holders fit at quorum", name)
			if q > 1 {
				assert.True(t, holdersFit(replicas, limit, limit+1, q-1), "%s: not the smallest quorum", name)
			}
		}
	}
	assert.Equal(t, 2, lock.Quorum(3, 1), "a lock on 3 replicas: a majority")
	assert.Equal(t, 3, lock.Quorum(5, 1))
	assert.Equal(t, 3, lock.Quorum(3, 2), "a majority is not enough for a semaphore")
	assert.Equal(t, 4, lock.Quorum(5, 2))
	assert.Equal(t, 1, lock.Quorum(1, 5))
}

// holdersFit reports whether holders distinct holders can each hold q
// distinct replicas of replicas, no replica admitting more than limit,
// by trying every choice of replica sets (small sizes only).
func holdersFit(replicas, limit, holders, q int) bool {
	var sets []uint
	for s := uint(0); s < 1<<replicas; s++ {
		if popcount(s) == q {
			sets = append(sets, s)
		}
	}
	load := make([]int, replicas)
	var place func(h, from int) bool
	place = func(h, from int) bool {
		if h == holders {
			return true
		}
		// Holders are interchangeable: choose sets in order, repeats
		// allowed, to avoid trying permutations.
		for i := from; i < len(sets); i++ {
			ok := true
			for r := range replicas {
				if sets[i]&(1<<r) != 0 && load[r] == limit {
					ok = false
				}
			}
			if !ok {
				continue
			}
			for r := range replicas {
				if sets[i]&(1<<r) != 0 {
					load[r]++
				}
			}
			if place(h+1, i) {
				return true
			}
			for r := range replicas {
				if sets[i]&(1<<r) != 0 {
					load[r]--
				}
			}
		}
		return false
	}
	return place(0, 0)
}

func popcount(s uint) int {
	n := 0
	for ; s != 0; s &= s - 1 {
		n++
	}
	return n
}
