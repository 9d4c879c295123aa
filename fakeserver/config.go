package fakeserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config mirrors the real server's flags. The zero value of each field is
// the real server's default, except Port: 0 picks a free port, which is
// what tests want (DefaultConfig and `dflock serve` use 6388).
type Config struct {
	// Host to listen on. Default "127.0.0.1".
	Host string
	// Port to listen on. 0 picks a free port.
	Port int
	// DefaultLeaseTTL is the lease of a grant or renew that names none.
	// Whole seconds, at least one. Default 33 s.
	DefaultLeaseTTL time.Duration
	// LeaseSweepInterval is how often expired holders are evicted and
	// their slots granted to waiters. Default 1 s.
	LeaseSweepInterval time.Duration
	// GCInterval is how often idle keys are collected. Default 5 s.
	GCInterval time.Duration
	// GCMaxIdle is how long a key with no holder and no waiter stays
	// tracked (and counted against MaxLocks). Default 60 s.
	GCMaxIdle time.Duration
	// MaxLocks bounds the keys tracked, idle ones included. Default 1024;
	// negative means unlimited.
	MaxLocks int
	// MaxConnections bounds open connections; one over the limit is
	// accepted and closed without a reply. A connection whose client has
	// gone while the server is blocked in a request on it still counts
	// until that request ends. 0 means unlimited.
	MaxConnections int
	// MaxWaiters bounds each key's queue. 0 means unlimited.
	MaxWaiters int
	// ReadTimeout closes a connection (after answering "error") that sends
	// no complete line for this long while the server waits for a request.
	// Default 23 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write of replies. Default 5 s.
	WriteTimeout time.Duration
	// ShutdownTimeout bounds a graceful Shutdown: connections still open
	// then are closed without a reply. Default 30 s.
	ShutdownTimeout time.Duration
	// DisableAutoRelease keeps a closed connection's locks until their
	// leases expire (the real server's -auto-release-on-disconnect=false).
	// Its queued enqueues also stay in line: each is granted in turn, to
	// nobody, and holds its slot for its lease.
	DisableAutoRelease bool
	// AuthToken, when set, must be sent with "auth" as the first request
	// of every connection.
	AuthToken string
	// TLS, when set, serves TLS instead of plain TCP.
	TLS *tls.Config
	// Listen opens the listener, with network "tcp" and Host:Port, at
	// Start and at each Restart. Nil listens on TCP (net.Listen). Tests
	// listen on an in-memory network with it, so that the server runs in
	// a testing/synctest bubble; TLS applies on top of what it returns.
	Listen func(network, addr string) (net.Listener, error)
	// Logger receives connection and protocol events. Nil discards them.
	// Protocol errors (garbage from a client, a read timeout, a failed
	// auth) are logged whole only the first time of each kind in every
	// 10 s; the rest are counted, and the count is logged when the 10 s
	// end.
	Logger *slog.Logger
}

// DefaultConfig returns the real server's defaults, port 6388 included.
func DefaultConfig() Config {
	c := Config{Port: 6388}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.DefaultLeaseTTL, 33*time.Second)
	def(&c.LeaseSweepInterval, time.Second)
	def(&c.GCInterval, 5*time.Second)
	def(&c.GCMaxIdle, 60*time.Second)
	def(&c.ReadTimeout, 23*time.Second)
	def(&c.WriteTimeout, 5*time.Second)
	def(&c.ShutdownTimeout, 30*time.Second)
	if c.MaxLocks == 0 {
		c.MaxLocks = 1024
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

var errConfig = errors.New("fakeserver: invalid config")

func (c *Config) validate() error {
	if c.DefaultLeaseTTL < time.Second || c.DefaultLeaseTTL%time.Second != 0 {
		return fmt.Errorf("%w: DefaultLeaseTTL %v must be whole seconds, at least 1 s", errConfig, c.DefaultLeaseTTL)
	}
	for name, d := range map[string]time.Duration{
		"LeaseSweepInterval": c.LeaseSweepInterval, "GCInterval": c.GCInterval, "GCMaxIdle": c.GCMaxIdle,
		"ReadTimeout": c.ReadTimeout, "WriteTimeout": c.WriteTimeout, "ShutdownTimeout": c.ShutdownTimeout,
	} {
		if d < 0 {
			return fmt.Errorf("%w: %s %v must not be negative", errConfig, name, d)
		}
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("%w: port %d out of range", errConfig, c.Port)
	}
	if c.MaxConnections < 0 || c.MaxWaiters < 0 {
		return fmt.Errorf("%w: MaxConnections and MaxWaiters must not be negative", errConfig)
	}
	return nil
}
