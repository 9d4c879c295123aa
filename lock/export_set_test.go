package lock

// SetGrantsOf lists, for each member of s, the grants it holds now,
// server and token (see GrantsOf).
func SetGrantsOf(s *Set) map[string][]struct{ Addr, Token string } {
	out := make(map[string][]struct{ Addr, Token string }, len(s.locks))
	for _, l := range s.locks {
		out[l.key] = GrantsOf(l)
	}
	return out
}
