package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
	"github.com/dflock-go/dflock/wire"
)

// parseInterspersed parses flags that may come before, between or after
// positional arguments ("where KEY... --servers a:1"), and returns the
// positional ones. After "--" every argument is positional, even one that
// starts with a dash.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		left := fs.Args()
		// The flag package swallows the "--" that stopped it; see whether
		// that is why it stopped.
		if consumed := len(args) - len(left); consumed > 0 && args[consumed-1] == "--" {
			return append(rest, left...), nil
		}
		if len(left) == 0 {
			return rest, nil
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(list string) []string {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// parseServers splits a comma-separated server list and checks each
// address, so a typo is reported before anything is dialled, as bad
// input (exit 2).
func parseServers(list string) ([]string, error) {
	out := splitList(list)
	for i, s := range out {
		if err := pool.CheckAddr(s); err != nil {
			return nil, errUsage{err: err}
		}
		if slices.Contains(out[:i], s) {
			return nil, errUsage{err: fmt.Errorf("server %q appears twice", s)}
		}
	}
	if len(out) == 0 {
		return nil, errUsage{err: errors.New("no servers given")}
	}
	return out, nil
}

// runWhere prints the server each key maps to.
func runWhere(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet(`dflock where KEY... [--servers host:port,... | --fleet FILE] [--strategy stable|consistent|rendezvous] [--replicas N]
       dflock where --plan --from host:port,... --to host:port,... KEY... [--strategy ...] [--replicas N]
       dflock where --plan --fleet FILE KEY... [--replicas N]`,
		"Prints the server each key maps to (with --replicas N, its N servers), or with --plan the keys a change of servers moves.", stderr)
	plan := fs.Bool("plan", false, "list the keys whose servers (their replicas, with --replicas) differ between the fleets --from and --to: the keys a membership change moves, each with its servers before -> after")
	from := fs.String("from", "", "with --plan: the servers before the change, in the order clients list them")
	to := fs.String("to", "", "with --plan: the servers after the change")
	fleetFile := fs.String("fleet", "", "a fleet file (see lock.Fleet): its servers and strategy, in place of --servers and --strategy; with --plan, the change from its previous servers to its servers")
	var servers string
	serversFlag(fs, &servers, getenv)
	strategy := fs.String("strategy", "stable", "stable (CRC32, like the Python/TypeScript clients), consistent or rendezvous")
	var replicas int
	envErr := replicasFlag(fs, &replicas, "print each key's first N servers (odd), most preferred first: its replicas, as dflock run --replicas and lock.Config.Replicas place it", getenv)
	keys, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case envErr != nil:
		return usageError(fs, "%v", envErr)
	case len(keys) == 0:
		return usageError(fs, "no keys given")
	case replicas < 1 || replicas%2 == 0:
		return usageError(fs, "--replicas %d: an odd number of servers (1, 3, 5...), as clients take", replicas)
	case *fleetFile != "":
		given := []string{}
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "servers", "strategy", "from", "to":
				given = append(given, "--"+f.Name)
			}
		})
		if len(given) > 0 {
			return usageError(fs, "--fleet gives the servers and the strategy: leave out %s", strings.Join(given, ", "))
		}
		f, err := lock.ReadFleet(*fleetFile)
		if err != nil {
			return err
		}
		if *plan && f.Previous == nil {
			return usageError(fs, "--plan --fleet: %s names no previous servers, so no change is under way", *fleetFile)
		}
		servers, *from, *to = strings.Join(f.Servers, ","), strings.Join(f.Previous, ","), strings.Join(f.Servers, ",")
		*strategy = cmp.Or(f.Strategy, "stable")
	case !slices.Contains(shard.Names(), *strategy):
		return usageError(fs, "--strategy %q: one of %s", *strategy, strings.Join(shard.Names(), ", "))
	case *plan && (*from == "" || *to == ""):
		return usageError(fs, "--plan needs --from and --to")
	case !*plan && (*from != "" || *to != ""):
		return usageError(fs, "--from and --to go with --plan")
	}
	for _, k := range keys {
		if err := wire.CheckKey(k); err != nil {
			// Bad input, like any other usage error: exit 2.
			return errUsage{err: err}
		}
	}
	if *plan {
		return printPlan(fs, keys, *strategy, *from, *to, replicas, stdout, stderr)
	}
	list, err := parseServers(servers)
	if err != nil {
		return err
	}
	if replicas > len(list) {
		return usageError(fs, "--replicas %d needs at least %d servers; --servers lists %d", replicas, replicas, len(list))
	}
	s, err := shard.ByName(*strategy, list)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, k := range keys {
		addrs, err := shard.Replicas(s, k, replicas)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\n", k, strings.Join(addrs, "\t"))
	}
	return tw.Flush()
}

// printPlan prints the keys whose replicas differ between the fleets from
// and to, each with its servers before and after, then how many moved.
func printPlan(fs *flag.FlagSet, keys []string, strategy, from, to string, replicas int, stdout, stderr io.Writer) error {
	var fleets [2]shard.Strategy
	for i, list := range []string{from, to} {
		servers, err := parseServers(list)
		if err != nil {
			return err
		}
		if replicas > len(servers) {
			return usageError(fs, "--replicas %d needs at least %d servers; %s lists %d", replicas, replicas, []string{"the servers before (--from)", "the servers after (--to)"}[i], len(servers))
		}
		if fleets[i], err = shard.ByName(strategy, servers); err != nil {
			return err
		}
	}
	moves, err := shard.ReplicaMoves(keys, fleets[0], fleets[1], replicas)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, m := range moves {
		fmt.Fprintf(tw, "%s\t%s\t->\t%s\n", m.Key, strings.Join(m.From, ","), strings.Join(m.To, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%d of %d keys move (%.1f%%)\n", len(moves), len(keys), 100*float64(len(moves))/float64(len(keys)))
	return nil
}
