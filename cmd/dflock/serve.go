package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dflock-go/dflock/fakeserver"
)

// serveSetting is one setting of the real dflockd: its flag, the
// environment variable it falls back to, and the name a user might
// guess for that variable when the real server reads another.
type serveSetting struct {
	flag    string
	env     string
	guessed string // DFLOCKD_<FLAG>, when env is something else
}

// serveSettings lists every flag of dflockd v1.10 with its environment
// variable, as the real server reads them. Seven variables do not follow
// DFLOCKD_<FLAG>; the real server silently ignores the guessed names, so
// dflock serve refuses them instead.
var serveSettings = []serveSetting{
	{flag: "host", env: "DFLOCKD_HOST"},
	{flag: "port", env: "DFLOCKD_PORT"},
	{flag: "default-lease-ttl", env: "DFLOCKD_DEFAULT_LEASE_TTL_S", guessed: "DFLOCKD_DEFAULT_LEASE_TTL"},
	{flag: "lease-sweep-interval", env: "DFLOCKD_LEASE_SWEEP_INTERVAL_S", guessed: "DFLOCKD_LEASE_SWEEP_INTERVAL"},
	{flag: "gc-interval", env: "DFLOCKD_GC_LOOP_SLEEP", guessed: "DFLOCKD_GC_INTERVAL"},
	{flag: "gc-max-idle", env: "DFLOCKD_GC_MAX_UNUSED_TIME", guessed: "DFLOCKD_GC_MAX_IDLE"},
	{flag: "max-locks", env: "DFLOCKD_MAX_LOCKS"},
	{flag: "max-connections", env: "DFLOCKD_MAX_CONNECTIONS"},
	{flag: "max-waiters", env: "DFLOCKD_MAX_WAITERS"},
	{flag: "read-timeout", env: "DFLOCKD_READ_TIMEOUT_S", guessed: "DFLOCKD_READ_TIMEOUT"},
	{flag: "write-timeout", env: "DFLOCKD_WRITE_TIMEOUT_S", guessed: "DFLOCKD_WRITE_TIMEOUT"},
	{flag: "shutdown-timeout", env: "DFLOCKD_SHUTDOWN_TIMEOUT_S", guessed: "DFLOCKD_SHUTDOWN_TIMEOUT"},
	{flag: "auto-release-on-disconnect", env: "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT"},
	{flag: "tls-cert", env: "DFLOCKD_TLS_CERT"},
	{flag: "tls-key", env: "DFLOCKD_TLS_KEY"},
	// The token has its own order; see serveFlags.resolveAuthToken.
	{flag: "auth-token", env: "DFLOCKD_AUTH_TOKEN"},
	{flag: "auth-token-file", env: "DFLOCKD_AUTH_TOKEN_FILE"},
	{flag: "debug", env: "DFLOCKD_DEBUG"},
	{flag: "version"},
}

// serveFlags are the real dflockd's flags, with its defaults.
type serveFlags struct {
	host                    string
	port                    int
	defaultLeaseTTL         int
	leaseSweepInterval      int
	gcInterval              int
	gcMaxIdle               int
	maxLocks                int
	maxConnections          int
	maxWaiters              int
	readTimeout             int
	writeTimeout            int
	shutdownTimeout         int
	autoReleaseOnDisconnect bool
	authToken               string
	authTokenFile           string
	tlsCert                 string
	tlsKey                  string
	debug                   bool
	version                 bool
}

func newServeFlagSet(f *serveFlags, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("dflock serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := fakeserver.DefaultConfig()
	secs := func(v time.Duration) int { return int(v / time.Second) }
	fs.StringVar(&f.host, "host", d.Host, "address to listen on")
	fs.IntVar(&f.port, "port", d.Port, "port to listen on (0 picks a free one)")
	fs.IntVar(&f.defaultLeaseTTL, "default-lease-ttl", secs(d.DefaultLeaseTTL), "lease in seconds when a request names none")
	fs.IntVar(&f.leaseSweepInterval, "lease-sweep-interval", secs(d.LeaseSweepInterval), "seconds between sweeps of expired leases")
	fs.IntVar(&f.gcInterval, "gc-interval", secs(d.GCInterval), "seconds between collections of idle keys")
	fs.IntVar(&f.gcMaxIdle, "gc-max-idle", secs(d.GCMaxIdle), "seconds an idle key stays tracked")
	fs.IntVar(&f.maxLocks, "max-locks", d.MaxLocks, "most keys tracked, idle ones included")
	fs.IntVar(&f.maxConnections, "max-connections", d.MaxConnections, "most open connections (0: unlimited)")
	fs.IntVar(&f.maxWaiters, "max-waiters", d.MaxWaiters, "most waiters per key (0: unlimited)")
	fs.IntVar(&f.readTimeout, "read-timeout", secs(d.ReadTimeout), "seconds a connection may stay silent between requests")
	fs.IntVar(&f.writeTimeout, "write-timeout", secs(d.WriteTimeout), "seconds a write of replies may take (0: no limit)")
	fs.IntVar(&f.shutdownTimeout, "shutdown-timeout", secs(d.ShutdownTimeout), "seconds a graceful shutdown may take (0: wait for every connection)")
	fs.BoolVar(&f.autoReleaseOnDisconnect, "auto-release-on-disconnect", !d.DisableAutoRelease, "release a connection's locks when it closes")
	fs.StringVar(&f.authToken, "auth-token", "", "shared secret every connection must send first; visible to other users, prefer -auth-token-file")
	fs.StringVar(&f.authTokenFile, "auth-token-file", "", "file holding the shared secret (surrounding whitespace trimmed)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate file; with -tls-key, serve TLS")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key file")
	fs.BoolVar(&f.debug, "debug", false, "log every connection")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	for _, st := range serveSettings {
		if st.env != "" {
			fl := fs.Lookup(st.flag)
			fl.Usage += " (env " + st.env + ")"
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: dflock serve [flags]\n\nAn in-memory dflockd. Every flag also comes from its DFLOCKD_* variable, as the real server reads them; a flag on the command line wins, except DFLOCKD_AUTH_TOKEN, which wins over -auth-token. Any other DFLOCKD_* variable is refused: dflockd would ignore it.\n\n")
		fs.PrintDefaults()
	}
	return fs
}

// parseServeFlags resolves the settings as dflockd v1.10 does: a flag on
// the command line wins over its environment variable, which wins over
// the default. Where the real server is silent about a mistake (a value
// it cannot parse, a variable name it does not read, an empty token
// file), dflock serve refuses to start instead: a server that quietly
// runs with other settings than asked, or without auth, is worse than
// one that does not start.
func parseServeFlags(args []string, getenv func(string) string, stderr io.Writer) (serveFlags, error) {
	var f serveFlags
	fs := newServeFlagSet(&f, stderr)
	if err := parseFlags(fs, args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, usageError(fs, "unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { onCommandLine[fl.Name] = true })
	for _, s := range serveSettings {
		if s.guessed != "" && getenv(s.guessed) != "" {
			return f, errUsage{err: fmt.Errorf("%s is not a dflockd setting (dflockd ignores it); use %s", s.guessed, s.env)}
		}
		if s.env == "" || onCommandLine[s.flag] || s.flag == "auth-token" || s.flag == "auth-token-file" {
			continue
		}
		if v := getenv(s.env); v != "" {
			if err := fs.Lookup(s.flag).Value.Set(envBool(v)); err != nil {
				return f, errUsage{err: fmt.Errorf("%s=%q: not a valid value for -%s", s.env, v, s.flag)}
			}
		}
	}
	if err := f.check(); err != nil {
		return f, errUsage{err: err, fs: fs}
	}
	if err := f.resolveAuthToken(getenv); err != nil {
		return f, err
	}
	return f, nil
}

// check refuses settings out of the real server's range, which it would
// take and then misbehave with (a lease of 0, say).
func (f serveFlags) check() error {
	for _, c := range []struct {
		flag string
		v    int
		min  int
	}{
		{"max-locks", f.maxLocks, 1}, {"default-lease-ttl", f.defaultLeaseTTL, 1},
		{"lease-sweep-interval", f.leaseSweepInterval, 1}, {"gc-interval", f.gcInterval, 1},
		{"read-timeout", f.readTimeout, 1}, {"write-timeout", f.writeTimeout, 0},
		{"shutdown-timeout", f.shutdownTimeout, 0}, {"max-connections", f.maxConnections, 0},
		{"max-waiters", f.maxWaiters, 0}, {"gc-max-idle", f.gcMaxIdle, 1},
	} {
		if c.v < c.min {
			return fmt.Errorf("-%s must be at least %d, got %d", c.flag, c.min, c.v)
		}
	}
	if f.port < 0 || f.port > 65535 {
		return fmt.Errorf("-port must be 0-65535, got %d", f.port)
	}
	return nil
}

// refuseUnknownVars refuses any DFLOCKD_ variable set in environ (as
// os.Environ lists it; getenv gives the values) that dflockd does not
// read. dflockd ignores such a variable, so a misspelt setting would
// leave the server on its default without a word.
func refuseUnknownVars(environ []string, getenv func(string) string) error {
	known := map[string]bool{}
	for _, s := range serveSettings {
		known[s.env] = true
	}
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		// Empty counts as unset, as for the variables dflockd reads.
		if strings.HasPrefix(name, "DFLOCKD_") && !known[name] && getenv(name) != "" && !slices.Contains(unknown, name) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	switch len(unknown) {
	case 0:
		return nil
	case 1:
		return errUsage{err: fmt.Errorf("%s is not a dflockd setting (dflockd ignores it); dflock serve -h lists the DFLOCKD_* variables", unknown[0])}
	}
	return errUsage{err: fmt.Errorf("%s are not dflockd settings (dflockd ignores them); dflock serve -h lists the DFLOCKD_* variables", strings.Join(unknown, ", "))}
}

// envBool maps the spellings dflockd accepts for a true or false
// variable (1/yes/true, 0/no/false, any case) onto ones flag accepts;
// other values pass through unchanged.
func envBool(v string) string {
	switch strings.ToLower(v) {
	case "yes":
		return "true"
	case "no":
		return "false"
	}
	return v
}

// resolveAuthToken applies dflockd's order for the token, the one
// setting where the environment beats the command line:
// DFLOCKD_AUTH_TOKEN, then -auth-token, then the file named by
// -auth-token-file, else by DFLOCKD_AUTH_TOKEN_FILE.
func (f *serveFlags) resolveAuthToken(getenv func(string) string) error {
	if v := getenv("DFLOCKD_AUTH_TOKEN"); v != "" {
		f.authToken = v
		return nil
	}
	if f.authToken != "" {
		return nil
	}
	path := f.authTokenFile
	if path == "" {
		path = getenv("DFLOCKD_AUTH_TOKEN_FILE")
	}
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the auth token file: %w", err)
	}
	f.authToken = strings.TrimSpace(string(b))
	if f.authToken == "" {
		// dflockd would serve everyone here; refuse rather than run open.
		return fmt.Errorf("auth token file %s is empty: refusing to serve without auth", path)
	}
	return nil
}

// noLimit stands for "no deadline" (a write or shutdown timeout of 0),
// which fakeserver.Config spells as a long one.
const noLimit = 100 * 365 * 24 * time.Hour

// config is the fakeserver's configuration for the settings, which check
// has passed, with the TLS key pair loaded.
func (f serveFlags) config(log *slog.Logger) (fakeserver.Config, error) {
	sec := func(n int) time.Duration {
		if n == 0 {
			return noLimit
		}
		return time.Duration(n) * time.Second
	}
	cfg := fakeserver.Config{
		Host:               f.host,
		Port:               f.port,
		DefaultLeaseTTL:    sec(f.defaultLeaseTTL),
		LeaseSweepInterval: sec(f.leaseSweepInterval),
		GCInterval:         sec(f.gcInterval),
		GCMaxIdle:          sec(f.gcMaxIdle),
		MaxLocks:           f.maxLocks,
		MaxConnections:     f.maxConnections,
		MaxWaiters:         f.maxWaiters,
		ReadTimeout:        sec(f.readTimeout),
		WriteTimeout:       sec(f.writeTimeout),
		ShutdownTimeout:    sec(f.shutdownTimeout),
		DisableAutoRelease: !f.autoReleaseOnDisconnect,
		AuthToken:          f.authToken,
		Logger:             log,
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return cfg, errUsage{err: errors.New("-tls-cert and -tls-key go together")}
	}
	if f.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return cfg, fmt.Errorf("loading TLS key pair: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

// runServe serves until ctx ends, then shuts down gracefully. ready, when
// set, receives the listening address.
func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(addr string)) error {
	f, err := parseServeFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	// After the flags: a guessed name (DFLOCKD_READ_TIMEOUT) gets the
	// advice parseServeFlags gives it, the name to use instead.
	if err := refuseUnknownVars(os.Environ(), getenv); err != nil {
		return err
	}
	if f.version {
		fmt.Fprintln(stdout, dflockVersion())
		return nil
	}
	level := slog.LevelInfo
	if f.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := f.config(log)
	if err != nil {
		return err
	}
	srv, err := fakeserver.Start(cfg)
	if errors.Is(err, syscall.EADDRINUSE) {
		addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
		return &commandError{err: err, hint: "something already listens at " + addr + ": pass another -port (or DFLOCKD_PORT), or stop it"}
	}
	if err != nil {
		return err
	}
	log.Info("dflock serve: in-memory dflockd listening",
		"addr", srv.Addr(), "tls", cfg.TLS != nil, "auth", cfg.AuthToken != "",
		"default_lease_ttl", strconv.Itoa(f.defaultLeaseTTL)+"s", "max_locks", cfg.MaxLocks)
	if ready != nil {
		ready(srv.Addr())
	}
	<-ctx.Done()
	if f.shutdownTimeout == 0 {
		log.Info("shutting down: waiting for every connection to close")
	} else {
		log.Info("shutting down: waiting for connections to close", "timeout", cfg.ShutdownTimeout)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	} else if err != nil {
		// As dflockd: the timeout closes what is left, and that is a
		// normal end, not a failure.
		log.Warn("shutdown timeout reached; closed the remaining connections")
	}
	return nil
}
