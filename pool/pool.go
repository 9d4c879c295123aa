package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/puddle/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/dflock-go/dflock/wire"
)

// Pool keeps the connections to one server.
type Pool struct {
	addr string
	cfg  Config
	log  *slog.Logger

	shared []sharedSlot
	next   atomic.Uint32
	excl   *puddle.Pool[*Conn]

	// mu guards conns. Lock order: Pool.mu, then a sharedSlot's mu, then
	// Conn.mu; freedMu is never held with another.
	mu    sync.Mutex
	conns map[uint64]*Conn // every open connection

	freedMu sync.Mutex
	freed   []freedConn // clean exclusive connections outside puddle

	// backoffMu guards the dial backoff: after failures in a row, no
	// dial before retryAt, so a server that refuses every connection is
	// not dialled in a tight loop.
	backoffMu sync.Mutex
	failures  int
	// lostLocks: a connection that held locks broke since the server last
	// answered a new connection (see Config.OnReturn).
	lostLocks bool
	retryAt   time.Time
	lastErr   error

	ids        atomic.Uint64
	dials      atomic.Uint64
	dialErrors atomic.Uint64
	broken     atomic.Uint64
	requests   atomic.Uint64 // requests queued for the server
	malformed  atomic.Uint64 // replies that could not be parsed
	// starvedWaits counts the looks at a connection past a call's
	// deadline that found its answer on the way (see Conn.overdue).
	starvedWaits atomic.Uint64

	// writeSize records requests per write, with writeOpts; nil
	// without Config.MeterProvider.
	writeSize metric.Int64Histogram
	writeOpts []metric.RecordOption

	// calls and timers are reused, by this pool only: a timer or a
	// channel belongs to the synctest bubble it was made in, and one
	// shared by every pool could be handed from a test's bubble to another
	// (which panics), or to code on the real clock.
	calls  sync.Pool // *call
	timers sync.Pool // stopped *time.Timer, for awaitBy: a deadline on every try-lock would otherwise cost a timer each

	goroutines sync.WaitGroup // each connection's reader and writer, dials
	closing    chan struct{}
	closeOnce  sync.Once
	maintDone  chan struct{}
}

// ErrClosed is returned by a closed pool.
var ErrClosed = errors.New("pool: closed")

// CheckAddr reports whether addr names a server the way a pool needs
// it: host:port, with a numeric port from 1 to 65535 and a host with no
// spaces or control characters (an empty host is the local machine). It
// catches a mistyped address before anything is dialled.
func CheckAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("server address %q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strings.TrimLeft(port, "0123456789") != "" {
		return fmt.Errorf("server address %q: the port must be a number from 1 to 65535", addr)
	}
	if strings.IndexFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return fmt.Errorf("server address %q: the host has a space or control character", addr)
	}
	return nil
}

// New returns a pool for the server at addr (host:port). It dials lazily.
func New(addr string, cfg Config) (*Pool, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := CheckAddr(addr); err != nil {
		return nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	p := &Pool{
		addr:      addr,
		cfg:       cfg,
		log:       cfg.Logger,
		shared:    make([]sharedSlot, cfg.SharedConns),
		conns:     make(map[uint64]*Conn),
		closing:   make(chan struct{}),
		maintDone: make(chan struct{}),
	}
	p.calls.New = func() any { return &call{done: make(chan struct{}, 1), home: &p.calls} }
	p.timers.New = func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	if mp := cfg.MeterProvider; mp != nil {
		h, err := mp.Meter("github.com/dflock-go/dflock/pool").Int64Histogram("dflock.pool.write.requests",
			metric.WithDescription("Requests carried by one write to a server's connection"),
			metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
		if err != nil {
			return nil, fmt.Errorf("%w: metrics: %v", errConfig, err)
		}
		p.writeSize = h
		p.writeOpts = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("server.address", addr)))}
	}
	excl, err := puddle.NewPool(&puddle.Config[*Conn]{
		// A Pin that waited for a slot finds a connection freed meanwhile
		// (one that left puddle while it held locks) before dialling:
		// under contention, locks granted after waits keep moving
		// connections out of puddle, and dialling a new one for each
		// (while the freed ones idled, then closed) cost dflockd a scan
		// of every key per disconnect.
		Constructor: func(ctx context.Context) (*Conn, error) {
			for {
				c, idle := p.takeFreed()
				if c == nil && ctx.Value(freedOnly{}) != nil {
					return nil, errNoFreed
				}
				if c == nil {
					return p.dial(ctx, false)
				}
				// One idle long enough for the server to have timed it
				// out is not worth the check: a new one costs about as much.
				if c.Err() == nil && idle < p.cfg.HealthCheckAfter {
					return c, nil
				}
				c.retire()
			}
		},
		Destructor: func(c *Conn) { c.close() },
		MaxSize:    int32(cfg.MaxConns - cfg.SharedConns),
	})
	if err != nil {
		return nil, err
	}
	p.excl = excl
	go p.maintain()
	return p, nil
}

// Addr is the server's address.
func (p *Pool) Addr() string { return p.addr }

// KeepAlive is how often a connection that holds locks carries a request.
func (p *Pool) KeepAlive() time.Duration { return p.cfg.KeepAlive }

// Do sends req and waits for its reply. Non-blocking requests share the
// pipelined connections; a blocking one (a lock with a timeout, a wait),
// and stats, whose reply may be megabytes, run on a clean exclusive
// connection (see Pin). Invalid requests are refused before anything is
// sent.
//
// If ctx ends before the reply, Do returns ctx's error at once: the
// caller only queues its request, and never waits for a socket. The
// request may still be answered later; a lock it grants then is released
// right away, never left held.
//
// A reply that grants a lock or slot comes with a Grant, which owns it
// from then on: the lock lives and dies with the connection that carried
// it.
func (p *Pool) Do(ctx context.Context, req *wire.Request) (Result, error) {
	return p.DoBy(ctx, req, time.Time{})
}

// DoBy is Do that also gives up waiting for the reply at deadline (unless
// it is zero), as a context deadline would, but without a context's
// allocations on the way: the error then matches ErrNoReply. A lock the
// request grants later is released at once.
func (p *Pool) DoBy(ctx context.Context, req *wire.Request, deadline time.Time) (Result, error) {
	if err := req.Validate(); err != nil {
		return Result{}, err
	}
	if needsCleanConn(req) {
		if !deadline.IsZero() {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		pin, err := p.Pin(ctx)
		if err != nil {
			return Result{}, err
		}
		defer pin.Unpin()
		return pin.Do(ctx, req)
	}
	cl := Call{p: p, req: *req}
	cl.send(ctx)
	return cl.Await(ctx, deadline)
}

// Ping sends a request with no effect on a shared connection and waits
// for the answer: nil means the server answered within ctx, so it is up
// and not stalled.
func (p *Pool) Ping(ctx context.Context) error {
	return p.PingBy(ctx, time.Time{})
}

// PingBy is Ping that also gives up at deadline (unless zero), as DoBy
// does: an answer on its way in this process by then still counts.
func (p *Pool) PingBy(ctx context.Context, deadline time.Time) error {
	req := keepAlive
	_, err := p.DoBy(ctx, &req, deadline)
	return err
}

// DoAll sends non-blocking requests together on one shared connection, in
// one write, and waits for all their replies (renewals due at the same
// time, say). Result i and error i belong to request i. A blocking request
// is refused (it would hold up the others), and so is an invalid one; the
// rest are still sent.
func (p *Pool) DoAll(ctx context.Context, reqs []wire.Request) ([]Result, []error) {
	return p.DoAllBy(ctx, reqs, time.Time{})
}

// DoAllBy is DoAll that also gives up waiting for the replies at deadline
// (unless it is zero), as DoBy does: the error of each request unanswered
// by then matches ErrNoReply, and a lock it grants later is released at
// once. Many try-locks of one server go out this way (lock.TryLockMany).
func (p *Pool) DoAllBy(ctx context.Context, reqs []wire.Request, deadline time.Time) ([]Result, []error) {
	results := make([]Result, len(reqs))
	errs := make([]error, len(reqs))
	c, err := p.sharedConn(ctx)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return results, errs
	}
	calls := make([]*call, len(reqs))
	c.mu.Lock()
	for i := range reqs {
		// An invalid request is refused by queueLocked.
		if needsCleanConn(&reqs[i]) {
			errs[i] = notPipelined("DoAll", &reqs[i])
			continue
		}
		calls[i], errs[i] = c.queueLocked(&reqs[i], false)
	}
	c.mu.Unlock()
	for i, cl := range calls {
		if cl != nil {
			results[i], _, errs[i] = c.awaitBy(ctx, cl, deadline)
		}
	}
	return results, errs
}

// notPipelined is the error of api (DoAll, Send) given req, which needs
// an exclusive connection.
func notPipelined(api string, req *wire.Request) error {
	return fmt.Errorf("%w: %s takes only requests that cannot block, not a lock or wait with a timeout, nor stats (Do runs those): got %q with timeout %d", wire.ErrInvalidRequest, api, req.Cmd.String(), req.Timeout)
}

// needsCleanConn reports whether req must run alone on a clean exclusive
// connection: it may block, or (stats) its reply may be megabytes.
func needsCleanConn(req *wire.Request) bool {
	return req.Blocking() || req.Cmd == wire.CmdStats
}

// sharedSlot is one shared connection, dialled on first use and again
// after it breaks.
type sharedSlot struct {
	mu      sync.Mutex
	c       *Conn
	dialing chan struct{} // closed when the dial in progress ends
	err     error         // of the last dial
}

func (p *Pool) sharedConn(ctx context.Context) (*Conn, error) {
	s := &p.shared[int(p.next.Add(1))%len(p.shared)]
	for {
		s.mu.Lock()
		if c := s.c; c != nil && c.Err() == nil {
			s.mu.Unlock()
			return c, nil
		}
		if p.isClosing() {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		if s.dialing == nil {
			ch := make(chan struct{})
			s.dialing, s.c = ch, nil
			started := p.spawn(func() {
				c, err := p.dial(context.Background(), true)
				s.mu.Lock()
				s.c, s.err, s.dialing = c, err, nil
				s.mu.Unlock()
				close(ch)
			})
			if !started {
				s.dialing = nil
				s.mu.Unlock()
				return nil, ErrClosed
			}
		}
		ch := s.dialing
		s.mu.Unlock()
		// Meanwhile another slot's working connection serves: a server at
		// its --max-connections would otherwise fail every request sent
		// to the slot it refuses, while a connection it took works.
		if c := p.anySharedConn(); c != nil {
			return c, nil
		}
		select {
		case <-ch:
			s.mu.Lock()
			err := s.err
			s.mu.Unlock()
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// anySharedConn returns a working shared connection, or nil.
func (p *Pool) anySharedConn() *Conn {
	for i := range p.shared {
		s := &p.shared[i]
		s.mu.Lock()
		c := s.c
		s.mu.Unlock()
		if c != nil && c.Err() == nil {
			return c
		}
	}
	return nil
}

// dial opens, secures and authenticates a connection, within DialTimeout
// whatever ctx says: puddle goes on constructing after the caller gives
// up, and the connection then serves the next caller. After a failure,
// dials back off (see dialBackoff); one asked for meanwhile fails at once
// with the last failure.
func (p *Pool) dial(ctx context.Context, shared bool) (*Conn, error) {
	p.backoffMu.Lock()
	if wait := time.Until(p.retryAt); wait > 0 {
		n, err := p.failures, p.lastErr
		p.backoffMu.Unlock()
		return nil, fmt.Errorf("%w (failure %d in a row; no new connection for %v)", err, n, wait.Round(time.Millisecond))
	}
	p.backoffMu.Unlock()
	c, err := p.dialConn(ctx, shared)
	if err != nil {
		p.dialErrors.Add(1)
		p.connFailed(err)
		return nil, err
	}
	return c, nil
}

// Dial backoff: the first failure is retried at once (a connection that
// a fault closed just after it was set up looks refused, and the next
// one usually works); after two in a row the next dial waits minBackoff,
// each further one twice as long, up to maxBackoff.
const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// connFailed records a dial that failed, or a connection the server
// closed before answering anything, and sets when the next dial may go.
func (p *Pool) connFailed(err error) {
	if errors.Is(err, ErrClosed) {
		// A dial that lost the race with Close: not the server's failure.
		return
	}
	p.backoffMu.Lock()
	if time.Now().Before(p.retryAt) {
		// Connections that fail together (every one dialled before a
		// crash) are one failure: the backoff grows by attempts, not by
		// the width of the pool.
		p.lastErr = err
		p.backoffMu.Unlock()
		return
	}
	p.failures++
	var wait time.Duration
	if p.failures > 1 {
		wait = min(minBackoff<<min(p.failures-2, 16), maxBackoff)
	}
	p.retryAt, p.lastErr = time.Now().Add(wait), err
	n := p.failures
	p.backoffMu.Unlock()
	// Logged at the first failure and then at powers of two, so a server
	// down for an hour does not flood the log.
	if n&(n-1) == 0 {
		p.log.Warn("pool: cannot connect", "addr", p.addr, "failures", n, "retry_in", wait, "err", err)
	}
}

// connAnswered records that a connection got its first reply: the
// server takes connections again.
func (p *Pool) connAnswered() {
	p.backoffMu.Lock()
	back := p.failures > 0 || p.lostLocks
	if p.failures > 0 {
		p.failures, p.retryAt, p.lastErr = 0, time.Time{}, nil
	}
	p.lostLocks = false
	p.backoffMu.Unlock()
	if back && p.cfg.OnReturn != nil {
		p.cfg.OnReturn()
	}
}

func (p *Pool) dialConn(ctx context.Context, shared bool) (*Conn, error) {
	p.dials.Add(1)
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	dial := p.cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: p.cfg.TCPKeepAlive}).DialContext
	}
	nc, err := dial(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	if p.cfg.TLS != nil {
		cfg := p.cfg.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(p.addr)
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, refusal(p.addr, err)
		}
		nc = tc
	}
	in := &watchedReader{Conn: nc}
	lr := wire.NewLineReader(in, wire.MaxStatsLen)
	if p.cfg.AuthToken != "" {
		if err := authenticate(ctx, p.addr, nc, lr, p.cfg.AuthToken); err != nil {
			nc.Close()
			return nil, err
		}
		p.connAnswered()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isClosing() {
		nc.Close()
		return nil, ErrClosed
	}
	c := newConn(p, p.ids.Add(1), in, lr, shared)
	p.conns[c.id] = c
	return c, nil
}

func authenticate(ctx context.Context, addr string, nc net.Conn, lr *wire.LineReader, secret string) error {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
		defer nc.SetDeadline(time.Time{})
	}
	req := wire.Request{Cmd: wire.CmdAuth, Secret: secret}
	buf, err := req.Append(nil)
	if err != nil {
		return err
	}
	if _, err := nc.Write(buf); err != nil {
		return err
	}
	line, err := lr.ReadLineLimit(wire.MaxResponseLen)
	if err != nil {
		if rerr := refusal(addr, err); errors.Is(rerr, ErrRefused) {
			return rerr
		}
		return fmt.Errorf("pool: auth: %w", err)
	}
	resp, err := wire.ParseResponse(wire.CmdAuth, line)
	if err != nil {
		return err
	}
	return resp.Err()
}

// connBroke forgets a broken connection.
func (p *Pool) connBroke(c *Conn, holds int, err error) {
	p.mu.Lock()
	delete(p.conns, c.id)
	p.mu.Unlock()
	if errors.Is(err, errClosing) || (holds == 0 && errors.Is(err, ErrServerTimedOut)) {
		return
	}
	p.broken.Add(1)
	if holds > 0 {
		p.backoffMu.Lock()
		watching := p.lostLocks
		p.lostLocks = true
		p.backoffMu.Unlock()
		if !watching && p.cfg.OnReturn != nil {
			p.spawn(p.watchReturn)
		}
		p.log.Warn("pool: connection broke; the server no longer holds what it granted on it", "addr", p.addr, "conn", c.id, "locks", holds, "err", loggable(err))
	} else {
		p.log.Debug("pool: connection broke", "addr", p.addr, "conn", c.id, "err", loggable(err))
	}
}

// returnProbe is how often a pool that lost locks with a connection
// tries to reach its server again, whatever the dial backoff, until it
// answers (see Config.OnReturn).
const returnProbe = 50 * time.Millisecond

// watchReturn dials the server every returnProbe once a connection that
// held locks broke, until a connection answers again (which calls
// OnReturn) or the pool closes: a restarted server is noticed within
// returnProbe, not at the next dial the backoff allows (up to
// maxBackoff), so that the locks lost there are taken back before the
// next server of a rolling restart goes down.
func (p *Pool) watchReturn() {
	t := time.NewTicker(returnProbe)
	defer t.Stop()
	for {
		select {
		case <-p.closing:
			return
		case <-t.C:
		}
		p.backoffMu.Lock()
		lost := p.lostLocks
		if lost {
			// A probe is not held back by the backoff of the dials that
			// failed while the server was down.
			p.retryAt = time.Time{}
		}
		p.backoffMu.Unlock()
		if !lost {
			return
		}
		// Its first answer on a new connection calls OnReturn. By a
		// deadline, not a context's timeout: a context's runs a goroutine
		// each time it fires, every 50 ms while a server is stalled, and
		// the race detector's runtime crashed under that churn in
		// virtual time (golang/go#78156).
		p.PingBy(context.Background(), time.Now().Add(returnProbe))
	}
}

// loggable describes err without a malformed reply's text, which may hold
// a token; callers still get the full error.
func loggable(err error) string {
	var re *wire.ReplyError
	if errors.As(err, &re) {
		return "malformed reply to " + re.Cmd.String() + ": " + re.Reason
	}
	return err.Error()
}

// spawn runs f in a goroutine that Close waits for, unless the pool is
// closing; it reports whether f runs.
func (p *Pool) spawn(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isClosing() {
		return false
	}
	p.goroutines.Add(1)
	go func() {
		defer p.goroutines.Done()
		f()
	}()
	return true
}

func (p *Pool) isClosing() bool {
	select {
	case <-p.closing:
		return true
	default:
		return false
	}
}

// Close closes every connection, which releases every lock held through
// them, and stops the pool. Pinned connections must be unpinned first:
// Close waits for them.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		// Under mu, so that no goroutine is added (see spawn, dial) once
		// Wait below may have begun.
		p.mu.Lock()
		close(p.closing)
		p.mu.Unlock()
		<-p.maintDone
		for _, c := range p.connList() {
			c.close()
		}
		p.excl.Close()
		p.goroutines.Wait()
	})
}

// Drain waits until no request is in flight on the pool's shared
// connections (try-locks, renewals, releases, and the releases the pool
// sends itself for grants that came after their caller gave up), or
// until ctx ends, or until the server has answered nothing for
// drainQuiet (a stalled server is not waited for). Closing first would
// leave a grant answered after its caller gave up held on a server that
// keeps locks after a disconnect (-auto-release-on-disconnect=false)
// until its lease ran out; its release goes out while the pool drains.
// Blocking requests, on exclusive connections, are not waited for.
func (p *Pool) Drain(ctx context.Context) error {
	inFlight, answers := p.sharedInFlight()
	if inFlight == 0 {
		return nil
	}
	t := time.NewTimer(drainPoll)
	defer t.Stop()
	lastAnswer := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		inFlight, n := p.sharedInFlight()
		if inFlight == 0 {
			return nil
		}
		if n != answers {
			answers, lastAnswer = n, time.Now()
		} else if time.Since(lastAnswer) >= drainQuiet {
			return nil
		}
		t.Reset(drainPoll)
	}
}

const (
	// drainPoll is how often Drain looks at the requests in flight.
	drainPoll = 2 * time.Millisecond
	// drainQuiet is how long Drain waits for a server that answers
	// nothing.
	drainQuiet = 50 * time.Millisecond
)

// sharedInFlight counts the requests in flight on the working shared
// connections, and those answered there so far (queued and no longer in
// flight).
func (p *Pool) sharedInFlight() (inFlight int, answered uint64) {
	for _, c := range p.connList() {
		if c.shared {
			c.mu.Lock()
			if c.broken == nil {
				n := len(c.pending) - c.head
				inFlight += n
				answered += c.queued - uint64(n)
			}
			c.mu.Unlock()
		}
	}
	return inFlight, answered
}

// connList returns every open connection.
func (p *Pool) connList() []*Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := make([]*Conn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	return conns
}
