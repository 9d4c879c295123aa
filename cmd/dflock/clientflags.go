package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dflock-go/dflock/lock"
	"github.com/dflock-go/dflock/pool"
)

// clientFlags are the connection flags shared by the commands that talk
// to servers. Each also comes from the environment.
type clientFlags struct {
	servers           string
	authTokenFile     string
	tlsCA             string
	serverReadTimeout time.Duration
	fleet             string // a fleet file, in place of servers (registerFleet)
	envErr            error  // a bad value in the environment, reported by config
}

// registerFleet registers --fleet, for the commands that talk to a
// running fleet (not bench, which measures servers it is given).
func (f *clientFlags) registerFleet(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&f.fleet, "fleet", getenv("DFLOCK_FLEET"), "fleet file naming the servers (and, during a fleet change, the previous ones), in place of --servers, followed as it changes (env DFLOCK_FLEET, which DFLOCK_SERVERS does not override)")
}

// fleetConflict reports --servers given on the command line together
// with a fleet file, which gives the servers itself.
func (f *clientFlags) fleetConflict(fs *flag.FlagSet) error {
	if f.fleet == "" {
		return nil
	}
	conflict := false
	fs.Visit(func(fl *flag.Flag) { conflict = conflict || fl.Name == "servers" })
	if conflict {
		return errors.New("--servers and a fleet file (--fleet, DFLOCK_FLEET) both name the servers: give one")
	}
	return nil
}

func (f *clientFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	serversFlag(fs, &f.servers, getenv)
	fs.StringVar(&f.authTokenFile, "auth-token-file", getenv("DFLOCK_AUTH_TOKEN_FILE"), "file holding the servers' auth token (env DFLOCK_AUTH_TOKEN_FILE)")
	fs.StringVar(&f.tlsCA, "tls-ca", getenv("DFLOCK_TLS_CA"), "PEM file of the CA that signed the servers' certificates; enables TLS (env DFLOCK_TLS_CA)")
	fs.Func("server-read-timeout", "the servers' --read-timeout, when not dflockd's "+pool.DefaultServerReadTimeout.String()+": connections are kept talking within it (env DFLOCK_SERVER_READ_TIMEOUT)", func(v string) error {
		return f.setServerReadTimeout(v)
	})
	if v := getenv("DFLOCK_SERVER_READ_TIMEOUT"); v != "" {
		if err := f.setServerReadTimeout(v); err != nil {
			f.envErr = fmt.Errorf("DFLOCK_SERVER_READ_TIMEOUT=%q: %v", v, err)
		}
	}
}

// setServerReadTimeout takes a duration ("5s") or whole seconds ("5"), as
// the server's own flag is given.
func (f *clientFlags) setServerReadTimeout(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return fmt.Errorf("not a duration: %q", v)
		}
		d = time.Duration(n) * time.Second
	}
	if d < time.Second {
		return fmt.Errorf("must be at least 1s, got %v", d)
	}
	f.serverReadTimeout = d
	return nil
}

// serversFlag registers --servers, defaulting to DFLOCK_SERVERS and then
// to the local default server.
func serversFlag(fs *flag.FlagSet, servers *string, getenv func(string) string) {
	def := getenv("DFLOCK_SERVERS")
	if def == "" {
		def = lock.DefaultServer
	}
	fs.StringVar(servers, "servers", def, "comma-separated servers, in the order every client uses (env DFLOCK_SERVERS)")
}

// replicasFlag registers --replicas with usage, defaulting to
// DFLOCK_REPLICAS and then to 1; a bad value there is an error.
func replicasFlag(fs *flag.FlagSet, n *int, usage string, getenv func(string) string) error {
	*n = 1
	if v := getenv("DFLOCK_REPLICAS"); v != "" {
		var err error
		if *n, err = strconv.Atoi(v); err != nil {
			return fmt.Errorf("DFLOCK_REPLICAS=%q: not a number", v)
		}
	}
	fs.IntVar(n, "replicas", *n, usage+" (env DFLOCK_REPLICAS)")
	return nil
}

// authToken reads the token file; the token never goes on a command line,
// where other users could read it.
func (f *clientFlags) authToken() (string, error) {
	if f.authTokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(f.authTokenFile)
	if err != nil {
		return "", fmt.Errorf("reading the auth token: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("auth token file %s is empty", f.authTokenFile)
	}
	return token, nil
}

func (f *clientFlags) tlsConfig() (*tls.Config, error) {
	if f.tlsCA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("reading the TLS CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", f.tlsCA)
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

func (f *clientFlags) config() (lock.Config, error) {
	token, err := f.authToken()
	if err != nil {
		return lock.Config{}, err
	}
	tc, err := f.tlsConfig()
	if err != nil {
		return lock.Config{}, err
	}
	if f.envErr != nil {
		return lock.Config{}, errUsage{err: f.envErr}
	}
	// The command reports what matters itself, in one voice (see render):
	// the library's log lines, slog.Default()'s by default, would speak
	// in another beside it.
	cfg := lock.Config{FleetFile: f.fleet, Pool: pool.Config{AuthToken: token, TLS: tc}, Logger: slog.New(slog.DiscardHandler)}
	if f.fleet == "" {
		if cfg.Servers, err = parseServers(f.servers); err != nil {
			return lock.Config{}, err
		}
	}
	cfg.Pool.ServerReadTimeout = f.serverReadTimeout
	return cfg, nil
}
