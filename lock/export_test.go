package lock

import "github.com/dflock-go/dflock/pool"

// LossGrant is one grant of a lock reported lost: the server it was on
// and its token.
type LossGrant struct{ Addr, Token string }

// SetLossHook makes c call f for every lock loss it reports, as it
// reports it and before it sends anything to the server (a loss at the
// deadline gives the lock back right after), with the grants the lock
// had (one per replica it ever held in this acquisition) and how many of
// them it needed. Set it before taking locks.
func SetLossHook(c *Client, f func(key string, gs []LossGrant, quorum int, err error)) {
	c.lossHook = func(gs []*pool.Grant, quorum int, err error) {
		var out []LossGrant
		key := ""
		for _, g := range gs {
			if g != nil {
				key = g.Key()
				out = append(out, LossGrant{g.Addr(), g.Token()})
			}
		}
		f(key, out, quorum, err)
	}
}
