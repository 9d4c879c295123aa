package lock

import (
	"errors"
	"slices"
)

// The decisions of a take are pure functions of a snapshot (a
// takeView): which replica arbitrates, whether the holder has its
// quorum, whether a round is settled. A key on one server is the case of
// a group of one replica with a quorum of one; nothing here knows of
// servers, connections or time, so that tables can test every case.

// tryOutcome is one replica's answer to a try-lock.
type tryOutcome struct {
	done     bool  // the answer, or the failure to get one, is in
	took     bool  // the holder holds it now
	answered bool  // the server answered (granted, busy or an error status)
	err      error // an error status, or why there was no answer
}

// takeView is what a take's decisions look at: the group being taken
// and, by server (indexes of the holder's servers), what is held, what
// this round's try-locks answered so far, and what the client lately
// learnt of each server.
type takeView struct {
	group  []int // the group's replicas, in the key's order
	quorum int   // how many of them the lock needs
	held   []bool
	outs   []tryOutcome
	// slow: the server lately failed to answer in time (never set for a
	// key with one server per group: there is no other to go on with).
	slow []bool
	// refuses: the server lately refused a wait (a dflockd draining for
	// shutdown).
	refuses []bool
}

// failed reports whether replica i is out of this round: not held, and
// it did not answer (or answered with a refusal other than busy or a
// full queue), or it has not answered yet and its server was too slow
// to answer lately. A busy answer from a server that refuses waits is
// out too: a contender could not wait there.
func (v *takeView) failed(i int) bool {
	o := v.outs[i]
	switch {
	case v.held[i]:
		return false
	case o.done && o.answered && o.err == nil:
		return v.refuses[i]
	case o.done:
		return !o.answered || (o.err != nil && !errors.Is(o.err, ErrMaxWaiters))
	}
	return v.slow[i]
}

// arbiter is the replica on which every contender for the key waits, so
// that two clients each holding a minority never wait on each other: the
// first of the group, in the key's order, that has not failed. Every
// client computes the same order, so while they see the same servers up
// they pick the same one. -1 when every replica failed.
func (v *takeView) arbiter() int {
	for _, i := range v.group {
		if !v.failed(i) {
			return i
		}
	}
	return -1
}

// count is how many of the group's replicas are held.
func (v *takeView) count() int {
	n := 0
	for _, i := range v.group {
		if v.held[i] {
			n++
		}
	}
	return n
}

// hasQuorum reports whether a quorum of the group is held.
func (v *takeView) hasQuorum() bool { return v.count() >= v.quorum }

// quorumWith reports whether the holder has taken the group: it holds
// the arbiter and a quorum.
func (v *takeView) quorumWith() bool {
	arb := v.arbiter()
	return arb >= 0 && v.held[arb] && v.hasQuorum()
}

// decided reports whether the answers in so far settle the round: the
// group is taken, or the arbiter answered without granting (the
// acquirer waits there, or fails, whatever the others say).
func (v *takeView) decided() bool {
	arb := v.arbiter()
	switch {
	case arb < 0:
		return false
	case v.held[arb]:
		return v.hasQuorum()
	}
	return v.outs[arb].done
}

// availability counts the group's replicas out of the round: those that
// answered with a refusal (refused) and those that did not answer
// (unreachable), and lists them all in order (out).
func (v *takeView) availability() (refused, unreachable int, out []int) {
	for _, i := range v.group {
		if !v.failed(i) {
			continue
		}
		if v.outs[i].answered {
			refused++
		} else {
			unreachable++
		}
		out = append(out, i)
	}
	return refused, unreachable, out
}

// reachable reports whether the group can still be taken: an arbiter
// exists and no more replicas failed than a quorum leaves spare.
func (v *takeView) reachable() bool {
	refused, unreachable, _ := v.availability()
	return v.arbiter() >= 0 && refused+unreachable <= len(v.group)-v.quorum
}

// replicaGroup is one route of a key: its replicas in one membership,
// as indexes into the holder's servers in that membership's order, and
// how many of them the lock needs. Groups never change once made.
type replicaGroup struct {
	idx    []int
	quorum int
}

// groupSet is a set of a holder's groups, by index: those taken, whose
// quorum the holder holds for this acquisition. Once the lock is held, a
// taken group that falls below its quorum loses it.
type groupSet uint32

func (s groupSet) has(k int) bool      { return s&(1<<k) != 0 }
func (s groupSet) with(k int) groupSet { return s | 1<<k }
func allGroups(n int) groupSet         { return 1<<n - 1 }
func (s groupSet) all(n int) bool      { return s&allGroups(n) == allGroups(n) }

// countIn is how many of g's replicas has reports held.
func countIn(g replicaGroup, has func(i int) bool) int {
	n := 0
	for _, i := range g.idx {
		if has(i) {
			n++
		}
	}
	return n
}

// quorate returns the first of groups whose replicas that has reports
// do not make a quorum, or -1 if every group has one.
func quorate(groups []replicaGroup, has func(i int) bool) int {
	for k, g := range groups {
		if countIn(g, has) < g.quorum {
			return k
		}
	}
	return -1
}

// short returns the first taken group of which fewer than a quorum are
// held, or -1: a held lock is lost when there is one.
func short(groups []replicaGroup, taken groupSet, held []bool) int {
	for k, g := range groups {
		if taken.has(k) && countIn(g, func(i int) bool { return held[i] }) < g.quorum {
			return k
		}
	}
	return -1
}

// kept reports whether replica i belongs to a taken group: the holder
// keeps it whatever it is taking now.
func kept(groups []replicaGroup, taken groupSet, i int) bool {
	for k, g := range groups {
		if taken.has(k) && slices.Contains(g.idx, i) {
			return true
		}
	}
	return false
}

// holdsEnough reports whether group k of groups counts as taken without
// a take of its own, from what is held already (servers shared with a
// group taken before, or answers to a first round sent to every
// server). Enough is a quorum, and for any group but the last of
// several its first replica too: a quorum that lacks the arbiter, kept
// while the holder waits on a later group, would hold up the arbiter's
// holder, who needs a replica of it, while that holder holds up this
// one. A key's only group is not taken without its arbiter either: a
// try-lock would jump the arbiter's queue.
func holdsEnough(groups []replicaGroup, k int, held []bool) bool {
	g := groups[k]
	lastOfSeveral := k == len(groups)-1 && k > 0
	n := countIn(g, func(i int) bool { return held[i] })
	return n >= g.quorum && (lastOfSeveral || held[g.idx[0]])
}
