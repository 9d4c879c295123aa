package fakeserver

import "errors"

// Fleet is a set of servers started together, as a sharded deployment.
type Fleet struct {
	// Servers are the fleet's servers, in the order they started.
	Servers []*Server
}

// StartFleet starts n servers with the same config (each on its own port
// when cfg.Port is 0).
func StartFleet(n int, cfg Config) (*Fleet, error) {
	if n < 1 {
		return nil, errors.New("fakeserver: a fleet needs at least one server")
	}
	if cfg.Port != 0 && n > 1 {
		return nil, errors.New("fakeserver: a fleet of several servers needs Port 0")
	}
	f := &Fleet{}
	for range n {
		s, err := Start(cfg)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.Servers = append(f.Servers, s)
	}
	return f, nil
}

// Addrs returns the servers' addresses in order.
func (f *Fleet) Addrs() []string {
	addrs := make([]string, len(f.Servers))
	for i, s := range f.Servers {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Close closes every server.
func (f *Fleet) Close() error {
	for _, s := range f.Servers {
		s.Close()
	}
	return nil
}
