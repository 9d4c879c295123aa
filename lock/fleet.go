package lock

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/dflock-go/dflock/shard"
)

// Fleet is a fleet's membership as operators publish it, in a fleet file
// (see Config.FleetFile) or to Client.Follow. In JSON:
//
//	{"strategy": "consistent", "servers": ["a:6388", "b:6388", "c:6388", "d:6388"],
//	 "previous": ["a:6388", "b:6388", "c:6388"]}
//
// During a change (see Client.Reconfigure) it names the servers the fleet
// is moving to and, in Previous, those it is leaving; once every client
// is in the transition, the operator drops Previous, which commits.
// Replace the file whole (write a new one beside it, then rename it over
// the old): a client that reads a half-written file ignores it and
// reads again, but one written in place may be read half old, half new.
type Fleet struct {
	// Strategy names the strategy, as shard.ByName knows it: "stable"
	// (the default), "consistent" or "rendezvous", with their defaults.
	Strategy string `json:"strategy,omitempty"`
	// Servers lists the servers keys live on, in the order every client
	// uses.
	Servers []string `json:"servers"`
	// Previous, during a change, lists the servers before it.
	Previous []string `json:"previous,omitempty"`
}

// ReadFleet reads a fleet file.
func ReadFleet(path string) (Fleet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Fleet{}, fmt.Errorf("lock: reading the fleet file: %w", err)
	}
	return parseFleet(b, path)
}

func parseFleet(b []byte, path string) (Fleet, error) {
	var f Fleet
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Fleet{}, fmt.Errorf("lock: fleet file %s: %w", path, err)
	}
	if _, err := f.Build(); err != nil {
		return Fleet{}, fmt.Errorf("lock: fleet file %s: %w", path, err)
	}
	return f, nil
}

// Build returns the strategy f describes: over Servers, or, with
// Previous, the transition from Previous to Servers.
func (f Fleet) Build() (shard.Strategy, error) {
	name := f.Strategy
	if name == "" {
		name = "stable"
	}
	to, err := shard.ByName(name, f.Servers)
	if err != nil || f.Previous == nil {
		return to, err
	}
	from, err := shard.ByName(name, f.Previous)
	if err != nil {
		return nil, fmt.Errorf("previous servers: %w", err)
	}
	return shard.NewTransition(from, to)
}

// sameStrategy reports whether a and b route every key alike, as far as
// can be told: the same built-in strategy over the same servers in the
// same order (or the same transition), or the very same value.
func sameStrategy(a, b shard.Strategy) bool {
	ta, aT := a.(*shard.Transition)
	tb, bT := b.(*shard.Transition)
	switch {
	case aT && bT:
		return sameStrategy(ta.From(), tb.From()) && sameStrategy(ta.To(), tb.To())
	case aT || bT:
		return false
	case a == b:
		return true
	}
	name := shard.NameOf(a)
	return name != "" && name == shard.NameOf(b) && slices.Equal(a.Servers(), b.Servers())
}

// Follow brings the client to the membership f describes, by the step it
// takes from where the client is: into the transition (as Reconfigure),
// out of it (as Commit, or Abort when f names the previous servers
// again), or nothing when the client is there already. A move of more
// than one step (a client that missed the transition) is made anyway,
// held locks following, and logged as a warning: while it lasts, clients
// before and after the change may both hold a moving key.
func (c *Client) Follow(ctx context.Context, f Fleet) error {
	target, err := f.Build()
	if err != nil {
		return invalid("fleet: %v", err)
	}
	c.moveMu.Lock()
	defer c.moveMu.Unlock()
	cur := c.route.Load().strategy
	if sameStrategy(cur, target) {
		return nil
	}
	step := "jumped"
	ct, curT := cur.(*shard.Transition)
	tt, targetT := target.(*shard.Transition)
	switch {
	case !curT && targetT && sameStrategy(cur, tt.From()):
		step = "entered the transition"
	case curT && !targetT && sameStrategy(ct.To(), target):
		step = "committed"
	case curT && !targetT && sameStrategy(ct.From(), target):
		step = "aborted"
	}
	if step == "jumped" {
		was, wasPrevious := c.Membership()
		c.log.Warn("lock: fleet change of more than one step: the fleet names other previous servers, or another strategy, than the client's; clients before and after it may both hold a moving key until every client is past it",
			"servers", f.Servers, "previous", f.Previous, "strategy", f.Strategy, "client_servers", was, "client_previous", wasPrevious, "client_strategy", shard.NameOf(cur))
	}
	return c.step(ctx, target, step)
}

// step moves the client to target (see reroute) and logs the step it
// took, so that operators can tell when every client has; c.moveMu is
// held.
func (c *Client) step(ctx context.Context, target shard.Strategy, step string) error {
	err := c.reroute(ctx, target)
	servers, previous := c.Membership()
	switch {
	case err != nil && !sameStrategy(c.route.Load().strategy, target):
		// Nothing changed: said as such, with where it was to go.
		to, from := target.Servers(), []string(nil)
		if t, ok := target.(*shard.Transition); ok {
			to, from = t.To().Servers(), t.From().Servers()
		}
		c.log.Error("lock: fleet change refused; the client stays where it is", "step", step, "to", to, "from", from, "servers", servers, "previous", previous, "err", err)
	case err != nil:
		c.log.Error("lock: fleet change", "step", step, "servers", servers, "previous", previous, "err", err)
	default:
		c.log.Info("lock: fleet change", "step", step, "servers", servers, "previous", previous)
	}
	return err
}

// fleetRetry spaces out attempts at a fleet file's step that failed
// without changing anything.
const fleetRetry = 10 * time.Second

// watchFleet reads the fleet file every interval until ctx ends, and
// follows each change. last is what New read. A file that cannot be read
// or parsed is logged and left alone: the client stays where it is.
func (c *Client) watchFleet(ctx context.Context, path string, every time.Duration, last []byte) {
	defer close(c.watchDone)
	t := time.NewTicker(every)
	defer t.Stop()
	var lastErr string
	var failedAt time.Time // the last step that failed and changed nothing
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Equal(b, last) && (failedAt.IsZero() || time.Since(failedAt) < fleetRetry) {
			continue
		}
		var f Fleet
		if err != nil {
			err = fmt.Errorf("lock: reading the fleet file: %w", err)
		} else {
			f, err = parseFleet(b, path)
		}
		if err != nil {
			// Logged once per distinct error: an editor's half-written
			// file is read again next time.
			if err.Error() != lastErr {
				c.log.Warn("lock: fleet file unusable; the client stays where it is", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		// Follow logs how the step went. A step that failed before
		// changing anything (a new server down) is tried again now and
		// then; one that moved the client and lost some locks is done.
		lastErr, last, failedAt = "", b, time.Time{}
		if err := c.Follow(ctx, f); err != nil && ctx.Err() == nil {
			if target, berr := f.Build(); berr == nil && !sameStrategy(c.route.Load().strategy, target) {
				failedAt = time.Now()
			}
		}
	}
}
