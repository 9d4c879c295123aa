package lock

// LossReport is what a reported loss was about.
type LossReport struct {
	Key string
	// Grants are the lock's grants, one per replica it took in this
	// acquisition (lost ones too): the server and the token.
	Grants []struct{ Addr, Token string }
	// Replicas is the key's replica count, Quorum how many of them it
	// needed, HeldBefore how many it held just before the loss.
	Replicas, Quorum, HeldBefore int
	Err                          error
}

// SetLossHook makes c call f for every lock loss it reports, as it
// reports it and before it sends anything to the server (a loss at the
// deadline gives the lock back right after). Set it before taking locks.
func SetLossHook(c *Client, f func(LossReport)) {
	c.lossHook = func(r lossReport, err error) {
		out := LossReport{Replicas: c.replicas, Quorum: r.quorum, HeldBefore: r.heldBefore, Err: err}
		for _, g := range r.grants {
			if g != nil {
				out.Key = g.Key()
				out.Grants = append(out.Grants, struct{ Addr, Token string }{g.Addr(), g.Token()})
			}
		}
		f(out)
	}
}

// GrantsOf lists the grants a held lock holds now, server and token.
func GrantsOf(l *Lock) []struct{ Addr, Token string } {
	h := l.holding()
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []struct{ Addr, Token string }
	for _, s := range h.slots {
		if s.grant != nil {
			out = append(out, struct{ Addr, Token string }{s.addr, s.grant.Token()})
		}
	}
	return out
}
