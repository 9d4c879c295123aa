package shard

import "fmt"

// Transition is a fleet between two memberships, as clients see it while
// a change rolls out (joint routing): a key whose servers are the same
// before and after lives where it did; a key whose servers differ lives
// on both, and a lock on it must be taken on its old servers first, then
// on its new ones, and released on both. Clients on the old membership
// and on the transition may run together, and so may clients on the
// transition and on the new membership: any two of them that take a key
// both take it on one of the same server sets. Old and new together
// could each hold the key, one on each set.
//
// A Transition is also a Strategy (and a Replicator): as one it routes a
// key to where it is going, its servers in the new membership, and lists
// the servers of both. Give it to lock.Config.Strategy to start a client
// in the middle of a rollout.
type Transition struct {
	from, to Strategy
}

// NewTransition returns the transition from one strategy to another.
func NewTransition(from, to Strategy) (*Transition, error) {
	if from == nil || to == nil {
		return nil, fmt.Errorf("shard: a transition needs both memberships")
	}
	_, fromT := from.(*Transition)
	_, toT := to.(*Transition)
	if fromT || toT {
		// Routes of a transition of transitions would need three.
		return nil, fmt.Errorf("shard: a transition is between two memberships, not transitions: finish one before starting the next")
	}
	return &Transition{from: from, to: to}, nil
}

// From returns the membership the fleet is leaving.
func (t *Transition) From() Strategy { return t.from }

// To returns the membership the fleet is moving to.
func (t *Transition) To() Strategy { return t.to }

// Servers returns every server of either membership, the old ones first.
func (t *Transition) Servers() []string {
	out := append([]string(nil), t.from.Servers()...)
	for _, s := range t.to.Servers() {
		found := false
		for _, o := range out {
			found = found || o == s
		}
		if !found {
			out = append(out, s)
		}
	}
	return out
}

// Server returns key's server in the new membership.
func (t *Transition) Server(key string) (string, error) { return t.to.Server(key) }

// Replicas returns key's n servers in the new membership.
func (t *Transition) Replicas(key string, n int) ([]string, error) { return Replicas(t.to, key, n) }

// Owners returns key's server before and after: Routes with one replica,
// without allocating.
func (t *Transition) Owners(key string) (from, to string, err error) {
	if from, err = t.from.Server(key); err != nil {
		return "", "", err
	}
	to, err = t.to.Server(key)
	return from, to, err
}

// Routes returns where key's lock must be taken, in order, with n
// replicas: its n servers in both memberships when they are the same
// set (one route), else its old servers, then its new ones (two routes).
func (t *Transition) Routes(key string, n int) ([][]string, error) {
	from, err := Replicas(t.from, key, n)
	if err != nil {
		return nil, err
	}
	to, err := Replicas(t.to, key, n)
	if err != nil {
		return nil, err
	}
	if sameSet(from, to) {
		return [][]string{from}, nil
	}
	return [][]string{from, to}, nil
}
