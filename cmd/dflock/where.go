package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/dflock-go/dflock/shard"
	"github.com/dflock-go/dflock/wire"
)

const defaultServers = "127.0.0.1:6388"

// parseInterspersed parses flags that may come before, between or after
// positional arguments ("where KEY... --servers a:1"), and returns the
// positional ones. "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, errUsage{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		if args[0] == "--" {
			return append(rest, args[1:]...), nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}

func splitServers(list string) []string {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// runWhere prints the server each key maps to.
func runWhere(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dflock where", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dflock where KEY... [--servers host:port,...] [--strategy stable|consistent|rendezvous]")
		fs.PrintDefaults()
	}
	var servers string
	serversFlag(fs, &servers, getenv)
	strategy := fs.String("strategy", "stable", "stable (CRC32, like the Python/TypeScript clients), consistent or rendezvous")
	keys, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		fs.Usage()
		return errUsage{fmt.Errorf("no keys")}
	}
	for _, k := range keys {
		if err := wire.CheckKey(k); err != nil {
			return err
		}
	}
	s, err := shard.ByName(*strategy, splitServers(servers))
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, k := range keys {
		addr, err := s.Server(k)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\n", k, addr)
	}
	return tw.Flush()
}
