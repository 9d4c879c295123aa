package lock

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/dflock-go/dflock/wire"
)

// The take's decisions, judged on snapshots, with no server: what the
// arbiter is, when a group is taken, when a round is settled, when a
// quorum is out of reach.

var (
	busy      = tryOutcome{done: true, answered: true}
	granted   = tryOutcome{done: true, answered: true, took: true}
	silent    = tryOutcome{done: true, err: errors.New("no reply")}
	refused   = tryOutcome{done: true, answered: true, err: wire.ErrServer}
	fullQueue = tryOutcome{done: true, answered: true, err: ErrMaxWaiters}
	pending   = tryOutcome{}
)

// view3 is a snapshot of a group of 3 replicas (servers 0, 1, 2 in the
// key's order), quorum 2, holding those in held, with answers outs.
func view3(held [3]bool, outs [3]tryOutcome) *takeView {
	return &takeView{
		group: []int{0, 1, 2}, quorum: 2,
		held: held[:], outs: outs[:],
		slow: make([]bool, 3), refuses: make([]bool, 3),
	}
}

func TestTakeViewArbiter(t *testing.T) {
	for _, tc := range []struct {
		name    string
		held    [3]bool
		outs    [3]tryOutcome
		slow    [3]bool
		refuses [3]bool
		arb     int
	}{
		{name: "all granted: the first", held: [3]bool{true, true, true}, outs: [3]tryOutcome{granted, granted, granted}, arb: 0},
		{name: "first busy: still the first", held: [3]bool{false, true, true}, outs: [3]tryOutcome{busy, granted, granted}, arb: 0},
		{name: "first silent: the second", outs: [3]tryOutcome{silent, busy, busy}, arb: 1},
		{name: "first refused: the second", outs: [3]tryOutcome{refused, busy, busy}, arb: 1},
		{name: "a full queue is no failure", outs: [3]tryOutcome{fullQueue, busy, busy}, arb: 0},
		{name: "first pending and slow lately: the second", outs: [3]tryOutcome{pending, busy, pending}, slow: [3]bool{true}, arb: 1},
		{name: "first pending, not slow: the first", outs: [3]tryOutcome{pending, busy, busy}, arb: 0},
		{name: "first busy but refusing waits: the second", outs: [3]tryOutcome{busy, busy, busy}, refuses: [3]bool{true}, arb: 1},
		{name: "held but silent now: held counts", held: [3]bool{true}, outs: [3]tryOutcome{silent, silent, silent}, arb: 0},
		{name: "every one failed", outs: [3]tryOutcome{silent, refused, silent}, arb: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := view3(tc.held, tc.outs)
			v.slow, v.refuses = tc.slow[:], tc.refuses[:]
			assert.Equal(t, tc.arb, v.arbiter())
		})
	}
}

func TestTakeViewDecisions(t *testing.T) {
	for _, tc := range []struct {
		name                         string
		held                         [3]bool
		outs                         [3]tryOutcome
		taken, quorum, decided, able bool
	}{
		{name: "arbiter and a quorum", held: [3]bool{true, true}, outs: [3]tryOutcome{granted, granted, pending}, taken: true, quorum: true, decided: true, able: true},
		{name: "a quorum without the arbiter", held: [3]bool{false, true, true}, outs: [3]tryOutcome{busy, granted, granted}, quorum: true, decided: true, able: true},
		{name: "the arbiter alone", held: [3]bool{true}, outs: [3]tryOutcome{granted, busy, busy}, able: true},
		{name: "the arbiter alone, others pending", held: [3]bool{true}, outs: [3]tryOutcome{granted, pending, pending}, able: true},
		{name: "arbiter pending: undecided", held: [3]bool{false, true, true}, outs: [3]tryOutcome{pending, granted, granted}, quorum: true, able: true},
		{name: "arbiter silent, next two held", held: [3]bool{false, true, true}, outs: [3]tryOutcome{silent, granted, granted}, taken: true, quorum: true, decided: true, able: true},
		{name: "two silent: out of reach", outs: [3]tryOutcome{silent, busy, silent}, decided: true},
		{name: "nothing answered yet", outs: [3]tryOutcome{pending, pending, pending}, able: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := view3(tc.held, tc.outs)
			assert.Equal(t, tc.taken, v.quorumWith(), "quorumWith")
			assert.Equal(t, tc.quorum, v.hasQuorum(), "hasQuorum")
			assert.Equal(t, tc.decided, v.decided(), "decided")
			assert.Equal(t, tc.able, v.reachable(), "reachable")
		})
	}
}

// A key on one server is the group of one replica with a quorum of one.
func TestTakeViewOneServer(t *testing.T) {
	one := func(held bool, o tryOutcome) *takeView {
		return &takeView{group: []int{0}, quorum: 1, held: []bool{held}, outs: []tryOutcome{o}, slow: []bool{false}, refuses: []bool{false}}
	}
	v := one(true, granted)
	assert.True(t, v.quorumWith())
	v = one(false, busy)
	assert.Equal(t, 0, v.arbiter(), "busy: wait on it")
	assert.True(t, v.decided())
	assert.False(t, v.quorumWith())
	v = one(false, silent)
	assert.Equal(t, -1, v.arbiter())
	assert.False(t, v.reachable(), "no other server to go on with")
	refused, unreachable, out := v.availability()
	assert.Equal(t, []int{0}, out)
	assert.Equal(t, 0, refused)
	assert.Equal(t, 1, unreachable)
}

func TestGroupRules(t *testing.T) {
	// Two groups of a moving key: old [0 1 2], new [1 2 3].
	groups := []replicaGroup{{idx: []int{0, 1, 2}, quorum: 2}, {idx: []int{1, 2, 3}, quorum: 2}}
	held := []bool{false, true, true, false}
	assert.False(t, holdsEnough(groups, 0, held), "the old group's quorum lacks its arbiter")
	assert.True(t, holdsEnough(groups, 1, held), "the last of several needs no arbiter")
	held = []bool{true, true, false, false}
	assert.True(t, holdsEnough(groups, 0, held))
	assert.False(t, holdsEnough(groups, 1, held))
	only := []replicaGroup{{idx: []int{0, 1, 2}, quorum: 2}}
	assert.False(t, holdsEnough(only, 0, []bool{false, true, true}), "a key's only group needs its arbiter")

	var taken groupSet
	taken = taken.with(0)
	assert.True(t, taken.has(0))
	assert.False(t, taken.all(2))
	assert.True(t, taken.with(1).all(2))
	assert.Equal(t, 0, short(groups, taken, []bool{true, false, false, true}), "a taken group below its quorum")
	assert.Equal(t, -1, short(groups, taken, []bool{true, true, false, false}), "a group not taken does not count")
	assert.True(t, kept(groups, taken, 2))
	assert.False(t, kept(groups, taken, 3))
	assert.Equal(t, 1, quorate(groups, func(i int) bool { return i < 2 }))
	assert.Equal(t, -1, quorate(groups, func(i int) bool { return i > 0 }))
}
