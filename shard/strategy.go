package shard

import (
	"errors"
	"fmt"
	"unsafe"
)

// Strategy maps keys to the servers of a fleet. Implementations must be
// safe for concurrent use and should not allocate per lookup.
type Strategy interface {
	// Server returns the address of the server that owns key.
	Server(key string) (string, error)
	// Servers returns the addresses the strategy maps to.
	Servers() []string
}

// Errors of this package.
var (
	// ErrNoServers: a strategy needs at least one server.
	ErrNoServers = errors.New("shard: no servers")
	// ErrBadServers: the server list has an empty or repeated address.
	ErrBadServers = errors.New("shard: invalid server list")
	// ErrBadIndex: a strategy function returned an index out of range.
	ErrBadIndex = errors.New("shard: strategy returned an index out of range")
)

func checkServers(servers []string) error {
	if len(servers) == 0 {
		return ErrNoServers
	}
	seen := make(map[string]bool, len(servers))
	for i, s := range servers {
		if s == "" {
			return fmt.Errorf("%w: address %d is empty", ErrBadServers, i)
		}
		if seen[s] {
			return fmt.Errorf("%w: %q appears twice", ErrBadServers, s)
		}
		seen[s] = true
	}
	return nil
}

// keyBytes views key's bytes without copying. The hash functions that get
// them neither keep nor modify them, and converting would cost an
// allocation per lookup.
func keyBytes(key string) []byte {
	return unsafe.Slice(unsafe.StringData(key), len(key))
}

// Move is a key whose server changes with a membership change.
type Move struct {
	Key      string
	From, To string
}

// Moves returns the keys that before and after route to different servers,
// in the order given: the keys to drain (release, and stop acquiring)
// before switching from one strategy to the other.
func Moves(keys []string, before, after Strategy) ([]Move, error) {
	var moves []Move
	for _, k := range keys {
		from, err := before.Server(k)
		if err != nil {
			return nil, err
		}
		to, err := after.Server(k)
		if err != nil {
			return nil, err
		}
		if from != to {
			moves = append(moves, Move{Key: k, From: from, To: to})
		}
	}
	return moves, nil
}

// Names lists the built-in strategies ByName knows.
func Names() []string { return []string{"stable", "consistent", "rendezvous"} }

// NameOf returns the name ByName knows s by, or "" for a strategy it
// does not build (a Func, a Transition, one of the caller's own).
func NameOf(s Strategy) string {
	switch s.(type) {
	case *StableHash:
		return "stable"
	case *Consistent:
		return "consistent"
	case *Rendezvous:
		return "rendezvous"
	}
	return ""
}

// ByName builds a built-in strategy over servers: "stable" (StableHash),
// "consistent" (Consistent with the default config) or "rendezvous".
func ByName(name string, servers []string) (Strategy, error) {
	switch name {
	case "stable":
		return NewStableHash(servers)
	case "consistent":
		return NewConsistent(servers, ConsistentConfig{})
	case "rendezvous":
		return NewRendezvous(servers)
	}
	return nil, fmt.Errorf("shard: unknown strategy %q (want one of %v)", name, Names())
}

// ReplicaMove is a key whose replicas change with a membership change:
// its n servers before and after, each in replica order (see Replicas).
type ReplicaMove struct {
	Key      string
	From, To []string
}

// ReplicaMoves returns the keys whose n replicas before and after are not
// the same set of servers, in the order given. A key whose replicas only
// change order keeps its locks valid (every quorum of one order is a
// quorum of the other) and is not listed. With n = 1 it lists the keys
// Moves does.
func ReplicaMoves(keys []string, before, after Strategy, n int) ([]ReplicaMove, error) {
	var moves []ReplicaMove
	for _, k := range keys {
		from, err := Replicas(before, k, n)
		if err != nil {
			return nil, err
		}
		to, err := Replicas(after, k, n)
		if err != nil {
			return nil, err
		}
		if !sameSet(from, to) {
			moves = append(moves, ReplicaMove{Key: k, From: from, To: to})
		}
	}
	return moves, nil
}

// sameSet reports whether a and b, each without repeats, hold the same
// servers.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}
