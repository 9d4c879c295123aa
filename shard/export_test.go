package shard

// LibraryClosestN is the ring library's own GetClosestN on c's current
// ring, for checking Replicas against it.
func LibraryClosestN(c *Consistent, key string, n int) ([]string, error) {
	r := c.cur.Load().Strategy.(ring)
	ms, err := r.c.GetClosestN([]byte(key), n)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.String()
	}
	return out, nil
}
