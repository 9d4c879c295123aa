package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/dflock-go/dflock/pool"
	"github.com/dflock-go/dflock/shard"
	"github.com/dflock-go/dflock/wire"
)

const defaultServers = "127.0.0.1:6388"

// parseInterspersed parses flags that may come before, between or after
// positional arguments ("where KEY... --servers a:1"), and returns the
// positional ones. After "--" every argument is positional, even one that
// starts with a dash.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, errUsage{err}
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
// address, so a typo is reported before anything is dialled.
func parseServers(list string) ([]string, error) {
	out := splitList(list)
	for _, s := range out {
		if err := pool.CheckAddr(s); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no servers given")
	}
	return out, nil
}

// runWhere prints the server each key maps to.
func runWhere(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dflock where", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dflock where KEY... [--servers host:port,...] [--strategy stable|consistent|rendezvous] [--replicas N]")
		fs.PrintDefaults()
	}
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
	}
	for _, k := range keys {
		if err := wire.CheckKey(k); err != nil {
			// Bad input, like any other usage error: exit 2.
			fmt.Fprintf(stderr, "dflock where: %v\n", err)
			return errUsage{err}
		}
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
