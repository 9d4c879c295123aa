package main

import (
	"flag"
	"fmt"
	"strconv"
	"time"
)

// durationFlag is a flag.Value for a duration whose error, for a bare
// number, says which unit was meant: "--timeout 5" fails with a hint of
// "5s", where the flag package says only "parse error".
type durationFlag struct{ d *time.Duration }

// durationVar defines a duration flag on fs, as fs.DurationVar does; its
// help names the argument "duration", as the flag package's own would.
func durationVar(fs *flag.FlagSet, d *time.Duration, name string, value time.Duration, usage string) {
	*d = value
	fs.Var(durationFlag{d}, name, usage+" (a `duration`: 500ms, 5s, 2m)")
}

func (f durationFlag) String() string {
	if f.d == nil {
		return time.Duration(0).String() // the zero value the flag package compares a default with
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err == nil {
		*f.d = d
		return nil
	}
	if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
		return fmt.Errorf("a duration needs a unit: %ss, %sms", s, s)
	}
	return fmt.Errorf("parse error: not a duration (such as 500ms, 5s, 2m)")
}
