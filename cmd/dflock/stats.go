package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// runStats prints each server's state.
func runStats(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dflock stats [--json] [--servers a:1,b:2 | --fleet FILE]", "Prints each server's state: connections, locks, semaphores, waiters, idle keys.", stderr)
	var cf clientFlags
	cf.register(fs, getenv)
	cf.registerFleet(fs, getenv)
	asJSON := fs.Bool("json", false, "print the servers' stats documents as JSON")
	extra, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(extra) > 0 {
		return usageError(fs, "unexpected arguments: %s", strings.Join(extra, " "))
	}
	if err := cf.fleetConflict(fs); err != nil {
		return usageError(fs, "%v", err)
	}
	cfg, err := cf.config()
	if err != nil {
		return err
	}
	c, err := lock.New(cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stats := c.Stats(ctx)
	for i, s := range stats {
		if errors.Is(s.Err, context.DeadlineExceeded) {
			// The wait ran out, not the server: say what it means, and
			// let the hint find it as the pool's own.
			stats[i].Err = retold{"no answer in time", []error{s.Err, pool.ErrNoReply}}
		}
	}
	if *asJSON {
		type entry struct {
			Server string `json:"server"`
			Error  string `json:"error,omitempty"`
			Stats  any    `json:"stats,omitempty"`
		}
		out := make([]entry, len(stats))
		for i, s := range stats {
			out[i] = entry{Server: s.Addr}
			if s.Err != nil {
				out[i].Error = s.Err.Error()
			} else {
				out[i].Stats = s.Stats
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
		return failures(stats)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	// Cells end with a tab except the last of each row, so no row ends
	// in padding.
	header := false
	for _, s := range stats {
		if s.Err != nil {
			// Rendered with its server named first, which the message
			// then calls "the server".
			fmt.Fprintf(stderr, "dflock stats: %s\n", render(fmt.Errorf("%s: %w", s.Addr, s.Err)))
			continue
		}
		if !header {
			fmt.Fprintln(tw, "server\tconnections\tlocks\tsemaphores\twaiters\tidle keys")
			header = true
		}
		waiters := 0
		for _, l := range s.Stats.Locks {
			waiters += l.Waiters
		}
		for _, sem := range s.Stats.Semaphores {
			waiters += sem.Waiters
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", s.Addr, s.Stats.Connections, len(s.Stats.Locks), len(s.Stats.Semaphores),
			waiters, len(s.Stats.IdleLocks)+len(s.Stats.IdleSemaphores))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := failures(stats); err != nil {
		return &commandError{err: err, hint: hint(err, &cf)}
	}
	return nil
}

// failures sums up the servers whose stats failed (each already printed,
// or in the JSON), or returns nil.
func failures(stats []lock.ServerStats) error {
	var failed []error
	for _, s := range stats {
		if s.Err != nil {
			// Named, for the hint to name it.
			failed = append(failed, fmt.Errorf("%s: %w", s.Addr, s.Err))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return retold{fmt.Sprintf("stats failed on %d of %d servers", len(failed), len(stats)), failed}
}
