package shard

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// elastic is a fleet whose membership changes only through Add and Remove.
// Each membership is an immutable view; a change builds the next view
// aside and swaps it in whole, so a lookup sees the old membership or the
// new one, never a half-built one, and takes no lock.
type elastic struct {
	mu    sync.Mutex // serialises changes
	cur   atomic.Pointer[view]
	build func(servers []string) (Strategy, error)
}

type view struct{ Strategy }

func (e *elastic) init(servers []string, build func([]string) (Strategy, error)) error {
	if err := checkServers(servers); err != nil {
		return err
	}
	s, err := build(servers)
	if err != nil {
		return err
	}
	e.build = build
	e.cur.Store(&view{s})
	return nil
}

// Server returns the address of the server that owns key.
func (e *elastic) Server(key string) (string, error) { return e.cur.Load().Server(key) }

// Servers returns the members, sorted.
func (e *elastic) Servers() []string { return e.cur.Load().Servers() }

// Add makes server a member. The keys that move to it (see PlanAdd) must
// be drained first: a key that moves while its lock is held could be held
// twice. A fleet of running clients changes safely through lock's
// Client.Reconfigure, given a new strategy, instead.
func (e *elastic) Add(server string) error { return e.change(withServer(server)) }

// Remove takes server out; the last server cannot be removed. Its keys
// (see PlanRemove) must be drained first.
func (e *elastic) Remove(server string) error { return e.change(withoutServer(server)) }

// PlanAdd returns which of keys would move if server joined, without
// changing anything.
func (e *elastic) PlanAdd(server string, keys []string) ([]Move, error) {
	return e.plan(keys, withServer(server))
}

// PlanRemove returns which of keys would move if server left, without
// changing anything.
func (e *elastic) PlanRemove(server string, keys []string) ([]Move, error) {
	return e.plan(keys, withoutServer(server))
}

type membershipEdit func(servers []string) ([]string, error)

func withServer(server string) membershipEdit {
	return func(servers []string) ([]string, error) {
		if slices.Contains(servers, server) {
			return nil, fmt.Errorf("%w: %q is already a member", ErrBadServers, server)
		}
		return append(servers, server), nil
	}
}

func withoutServer(server string) membershipEdit {
	return func(servers []string) ([]string, error) {
		i := slices.Index(servers, server)
		if i < 0 {
			return nil, fmt.Errorf("%w: %q is not a member", ErrBadServers, server)
		}
		if len(servers) == 1 {
			return nil, fmt.Errorf("%w: cannot remove the last server", ErrNoServers)
		}
		return slices.Delete(servers, i, i+1), nil
	}
}

func (e *elastic) change(edit membershipEdit) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	next, err := e.edited(edit)
	if err != nil {
		return err
	}
	e.cur.Store(&view{next})
	return nil
}

func (e *elastic) edited(edit membershipEdit) (Strategy, error) {
	servers, err := edit(e.cur.Load().Servers())
	if err != nil {
		return nil, err
	}
	if err := checkServers(servers); err != nil {
		return nil, err
	}
	return e.build(servers)
}

func (e *elastic) plan(keys []string, edit membershipEdit) ([]Move, error) {
	e.mu.Lock()
	now := e.cur.Load().Strategy
	next, err := e.edited(edit)
	e.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return Moves(keys, now, next)
}
