// Package shard decides which server of a fleet owns a key.
//
// Where a lock lives is part of the protocol: every client that contends
// for a key must send it to the same server, whatever language it is
// written in. [StableHash], the default, routes exactly as the Python,
// TypeScript and upstream Go dflockd clients do (CRC32 of the key modulo the
// number of servers), so services written in different languages agree.
// Its weakness is growth: adding a server moves most keys.
// [Consistent] moves only about 1/(n+1) of the keys when a fleet grows
// from n to n+1 servers and bounds each server's load.
//
// Membership never changes behind the user's back: a slow or unreachable
// server keeps its keys. Moving a key while its lock is held would let two
// clients hold it at once (one on the old server, one on the new). A
// fleet of running clients changes membership safely through a
// [Transition] (package lock's Client.Reconfigure rolls it out, held
// locks and all); Add and Remove change one strategy in place, and are
// safe only once the keys that [Moves] reports are drained.
//
//	s, err := shard.NewStableHash([]string{"10.0.0.1:6388", "10.0.0.2:6388"})
//	addr, err := s.Server("orders/42")
package shard
