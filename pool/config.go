package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// The defaults of Config's fields, used where a field is zero.
const (
	DefaultMaxConns    = 16
	DefaultSharedConns = 2
	DefaultDialTimeout = 5 * time.Second
	// DefaultServerReadTimeout is dflockd's default -read-timeout.
	DefaultServerReadTimeout = 23 * time.Second
	// DefaultKeepAlive and DefaultIdleTimeout give way to half and two
	// thirds of ServerReadTimeout when those are less.
	DefaultKeepAlive        = 10 * time.Second
	DefaultIdleTimeout      = 15 * time.Second
	DefaultHealthCheckAfter = time.Second
	DefaultWriteTimeout     = 5 * time.Second
	DefaultTCPKeepAlive     = 15 * time.Second
)

// Config tunes the connections to one server. The zero value of each field
// is its documented default.
type Config struct {
	// MaxConns bounds the connections to the server, shared and exclusive
	// together, that serve requests. Default DefaultMaxConns (16).
	// Blocking requests (an acquire that waits, a two-phase wait, stats)
	// each need an exclusive connection that holds no lock, so at most
	// MaxConns-SharedConns run at once; more wait for a connection
	// (within their timeout). A lock granted after a wait keeps its
	// connection until it is released; such connections do not count here
	// (there is one per such lock).
	MaxConns int
	// SharedConns is how many connections carry pipelined non-blocking
	// requests (try-locks, releases, renewals, stats); the rest serve
	// blocking requests one at a time. Default DefaultSharedConns (2),
	// or MaxConns-1 if that is less; less than MaxConns.
	SharedConns int
	// DialTimeout bounds dialling, the TLS handshake and authentication.
	// Default DefaultDialTimeout (5 s).
	DialTimeout time.Duration
	// ServerReadTimeout is the server's read timeout: it closes a
	// connection that sends nothing for that long, releasing its locks.
	// KeepAlive and IdleTimeout must stay below it. Default
	// DefaultServerReadTimeout (23 s), the server's default. Never set it
	// above the server's: the client would then claim locks the server may
	// already have released (in a partition) and let its connections be
	// timed out. Below it only costs more keep-alives.
	ServerReadTimeout time.Duration
	// KeepAlive: a connection that holds locks carries a request at least
	// this often, so the server never times it out. Default
	// DefaultKeepAlive (10 s), or half of ServerReadTimeout if that is
	// less.
	KeepAlive time.Duration
	// IdleTimeout closes connections that hold nothing and sat unused this
	// long, before the server would. Default DefaultIdleTimeout (15 s), or
	// two thirds of ServerReadTimeout if that is less.
	IdleTimeout time.Duration
	// HealthCheckAfter: an exclusive connection idle this long is pinged
	// before it is handed out. Default DefaultHealthCheckAfter (1 s).
	HealthCheckAfter time.Duration
	// WriteTimeout bounds one write of requests; a connection that cannot
	// write in time is broken. Default DefaultWriteTimeout (5 s).
	WriteTimeout time.Duration
	// TCPKeepAlive is the operating system's keep-alive period. Default
	// DefaultTCPKeepAlive (15 s). Unused with Dial.
	TCPKeepAlive time.Duration
	// Dial opens the connections, with network "tcp" and the pool's
	// address, within DialTimeout (its ctx). Nil dials TCP with
	// TCPKeepAlive. Tests dial an in-memory network with it, so that a
	// pool runs in a testing/synctest bubble; TLS and AuthToken apply on
	// top of what it returns.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS, when set, dials TLS. An empty ServerName is taken from the
	// address.
	TLS *tls.Config
	// AuthToken, when set, is sent as the first request of every
	// connection.
	AuthToken string
	// MeterProvider, when set, receives the pool's own metrics: requests
	// per write ("dflock.pool.write.requests"). Its other figures are in
	// Stats, which package lock reports as metrics.
	MeterProvider metric.MeterProvider
	// Logger receives connection events, never tokens or the auth token.
	// Nil discards them.
	Logger *slog.Logger
	// OnReturn, when set, is called each time the server answers again
	// after the pool lost it: a connection's first reply after dials
	// failed, or after a connection that held locks broke (a restarted
	// server). A client takes again then what it lost there. It is
	// called with a connection's lock held: it must not block, nor use
	// the pool; start a goroutine for the work.
	OnReturn func()
}

var errConfig = errors.New("pool: invalid config")

func (c *Config) setDefaults() error {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.SharedConns == 0 {
		c.SharedConns = min(DefaultSharedConns, c.MaxConns-1)
	}
	def(&c.DialTimeout, DefaultDialTimeout)
	def(&c.ServerReadTimeout, DefaultServerReadTimeout)
	def(&c.KeepAlive, min(DefaultKeepAlive, c.ServerReadTimeout/2))
	def(&c.IdleTimeout, min(DefaultIdleTimeout, c.ServerReadTimeout*2/3))
	def(&c.HealthCheckAfter, DefaultHealthCheckAfter)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.TCPKeepAlive, DefaultTCPKeepAlive)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.MaxConns < 2:
		return fmt.Errorf("%w: MaxConns %d: need at least 2 (shared and exclusive)", errConfig, c.MaxConns)
	case c.SharedConns < 1 || c.SharedConns >= c.MaxConns:
		return fmt.Errorf("%w: SharedConns %d must be at least 1 and less than MaxConns %d", errConfig, c.SharedConns, c.MaxConns)
	case c.DialTimeout < 0 || c.KeepAlive < 0 || c.IdleTimeout < 0 || c.HealthCheckAfter < 0 || c.WriteTimeout < 0 || c.TCPKeepAlive < 0 || c.ServerReadTimeout < 0:
		return fmt.Errorf("%w: durations must not be negative", errConfig)
	case c.KeepAlive >= c.ServerReadTimeout || c.IdleTimeout >= c.ServerReadTimeout:
		// Past it the server closes the connection, and its "error" notice
		// could be taken for the reply to a request sent at that moment.
		return fmt.Errorf("%w: KeepAlive %v and IdleTimeout %v must be below ServerReadTimeout %v", errConfig, c.KeepAlive, c.IdleTimeout, c.ServerReadTimeout)
	}
	return nil
}
