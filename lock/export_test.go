package lock

import "github.com/dflock-go/dflock/pool"

// SetLossHook makes c call f for every lock loss it reports, as it
// reports it and before it sends anything to the server (a loss at the
// deadline gives the lock back right after). Set it before taking locks.
func SetLossHook(c *Client, f func(addr, key, token string, err error)) {
	c.lossHook = func(g *pool.Grant, err error) { f(g.Addr(), g.Key(), g.Token(), err) }
}
