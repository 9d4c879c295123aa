package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/dflock-go/dflock/fakeserver"
)

// serveFlags are the real dflockd's flags. Each may also come from the
// environment as DFLOCKD_<NAME> (dashes as underscores); a flag given on
// the command line wins.
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
	tlsCert                 string
	tlsKey                  string
	debug                   bool
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
	fs.IntVar(&f.writeTimeout, "write-timeout", secs(d.WriteTimeout), "seconds a write of replies may take")
	fs.IntVar(&f.shutdownTimeout, "shutdown-timeout", secs(d.ShutdownTimeout), "seconds a graceful shutdown may take")
	fs.BoolVar(&f.autoReleaseOnDisconnect, "auto-release-on-disconnect", !d.DisableAutoRelease, "release a connection's locks when it closes")
	fs.StringVar(&f.authToken, "auth-token", "", "shared secret every connection must send first (unset: no auth)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate file; with -tls-key, serve TLS")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key file")
	fs.BoolVar(&f.debug, "debug", false, "log every connection")
	return fs
}

// parseServeFlags reads the environment first, then the command line.
func parseServeFlags(args []string, getenv func(string) string, stderr io.Writer) (serveFlags, error) {
	var f serveFlags
	fs := newServeFlagSet(&f, stderr)
	var envErr error
	fs.VisitAll(func(fl *flag.Flag) {
		name := "DFLOCKD_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v := getenv(name); v != "" && envErr == nil {
			if err := fl.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %v", name, v, err)
			}
		}
	})
	if envErr != nil {
		return f, envErr
	}
	if err := fs.Parse(args); err != nil {
		// The flag set has already printed the problem and the usage.
		return f, errUsage{err}
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return f, nil
}

func (f serveFlags) config(log *slog.Logger) (fakeserver.Config, error) {
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
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
	for name, v := range map[string]int{
		"default-lease-ttl": f.defaultLeaseTTL, "lease-sweep-interval": f.leaseSweepInterval,
		"gc-interval": f.gcInterval, "gc-max-idle": f.gcMaxIdle, "read-timeout": f.readTimeout,
		"write-timeout": f.writeTimeout, "shutdown-timeout": f.shutdownTimeout,
	} {
		if v <= 0 {
			return cfg, fmt.Errorf("-%s must be at least 1 second, got %d", name, v)
		}
	}
	if f.maxLocks <= 0 {
		return cfg, fmt.Errorf("-max-locks must be positive, got %d", f.maxLocks)
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return cfg, errors.New("-tls-cert and -tls-key go together")
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
func runServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(addr string)) error {
	f, err := parseServeFlags(args, getenv, stderr)
	if err != nil {
		return err
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
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}
