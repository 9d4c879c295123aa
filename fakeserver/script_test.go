package fakeserver_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/internal/memnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// replyTimeout bounds every read of a test; nothing in these tests should
// take longer.
const replyTimeout = 5 * time.Second

// testServer is a server under test and the network it listens on: an
// in-memory one, for a test in a synctest bubble, or loopback TCP when
// net is nil.
//
// Most tests run in a bubble: its clock is virtual, so a lease, a sweep or
// a read timeout ends exactly when due, whatever the machine's load, and
// synctest.Wait tells when the server has done all it can until the clock
// moves. A few run on TCP, so that TCP keeps its coverage (TLS, the FIN a
// refused line ends with, every protocol script).
type testServer struct {
	*fakeserver.Server
	net *memnet.Network
}

// start runs a server on an in-memory network, in the test's bubble, and
// closes it at the end.
func start(t *testing.T, cfg fakeserver.Config) *testServer {
	t.Helper()
	nw := memnet.New()
	cfg.Listen = nw.Listen
	srv, err := fakeserver.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return &testServer{Server: srv, net: nw}
}

// startTCP runs a server on loopback TCP and closes it at the end.
func startTCP(t *testing.T, cfg fakeserver.Config) *testServer {
	t.Helper()
	srv, err := fakeserver.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return &testServer{Server: srv}
}

// onBoth runs f twice, as subtests: "memnet", in a bubble, and "tcp". f
// starts its servers with the start it is given.
func onBoth(t *testing.T, f func(t *testing.T, start func(*testing.T, fakeserver.Config) *testServer)) {
	t.Run("memnet", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { f(t, start) })
	})
	t.Run("tcp", func(t *testing.T) { f(t, startTCP) })
}

// dialRaw connects to srv's address on its network.
func (srv *testServer) dialRaw(t *testing.T) (net.Conn, error) {
	if srv.net == nil {
		return net.DialTimeout("tcp", srv.Addr(), replyTimeout)
	}
	return srv.net.Dial(t.Context(), "tcp", srv.Addr())
}

// settle waits, in a bubble, until the server has done all it can before
// the clock moves: every request sent is handled or blocked. It returns
// at once on TCP.
func (srv *testServer) settle() {
	if srv.net != nil {
		synctest.Wait()
	}
}

// client is a raw protocol connection.
type client struct {
	t   *testing.T
	srv *testServer
	nc  net.Conn
	br  *bufio.Reader
}

func dial(t *testing.T, srv *testServer) *client {
	t.Helper()
	nc, err := srv.dialRaw(t)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, srv: srv, nc: nc, br: bufio.NewReader(nc)}
}

func (c *client) write(s string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, err := io.WriteString(c.nc, s)
	require.NoError(c.t, err)
}

// readLine returns the next reply line, or an error (io.EOF when the
// server closed the connection).
func (c *client) readLine(timeout time.Duration) (string, error) {
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	line, err := c.br.ReadString('\n')
	if err != nil {
		return line, err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

func (c *client) read() string {
	c.t.Helper()
	line, err := c.readLine(replyTimeout)
	require.NoError(c.t, err, "reading a reply")
	return line
}

func (c *client) do(cmd, key, arg string) string {
	c.t.Helper()
	c.write(cmd + "\n" + key + "\n" + arg + "\n")
	return c.read()
}

// expectClosed asserts the server closed the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	line, err := c.readLine(replyTimeout)
	require.Truef(c.t, errors.Is(err, io.EOF) || isReset(err), "want the connection closed, got %q, %v", line, err)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// expectSilent asserts no reply arrives for 50 ms: a request is still
// blocked. In a bubble the server has first done all it could, so the
// check is exact; on TCP it can only pass wrongly (if the reply comes
// later), never fail wrongly.
func (c *client) expectSilent() {
	c.t.Helper()
	c.srv.settle()
	line, err := c.readLine(50 * time.Millisecond)
	var ne net.Error
	require.Truef(c.t, errors.As(err, &ne) && ne.Timeout(), "want no reply yet, got %q, %v", line, err)
	if err != nil {
		// A timed-out read leaves bufio with the error; start afresh.
		c.br = bufio.NewReader(io.MultiReader(strings.NewReader(line), c.nc))
	}
}

var tokenVar = regexp.MustCompile(`\$[A-Z]`)

// runScript plays a conversation over several connections. Each line is
// one step:
//
//	N> cmd key arg   send a request on connection N (dialled on first use)
//	N>> "quoted"     send raw bytes
//	N< reply         read one reply; $X matches a token and binds it (or
//	                 must equal its earlier binding); ~ matches any number,
//	                 * anything
//	N~               no reply yet, and the server has N's request in a
//	                 key's queue (so later requests queue behind it)
//	N<closed         the server closed connection N
//	N close          close connection N from the client side, then wait
//	                 until the server has noticed and released it
//	N hangup         close connection N from the client side and go on at
//	                 once (a server blocked in N's request notices only
//	                 when that request ends)
//	N halfclose      shut down the sending side of connection N
//	expire KEY       the fault hook: end KEY's leases now and evict them
//	lapse KEY [$X]   end the lease of KEY's holder $X (of all its holders)
//	                 now but leave it in place, as a lease that ran out
//	                 since the last sweep
//	// text          a comment
//
// $X in a request is replaced by its bound token.
func runScript(t *testing.T, srv *testServer, script string) {
	t.Helper()
	conns := map[int]*client{}
	vars := map[string]string{}
	get := func(n int) *client {
		if conns[n] == nil {
			conns[n] = dial(t, srv)
		}
		return conns[n]
	}
	for _, step := range strings.Split(strings.TrimSpace(script), "\n") {
		step = strings.TrimSpace(step)
		if step == "" || strings.HasPrefix(step, "//") {
			continue
		}
		if key, ok := strings.CutPrefix(step, "expire "); ok {
			srv.ExpireNow(key)
			continue
		}
		if arg, ok := strings.CutPrefix(step, "lapse "); ok {
			key, tok, _ := strings.Cut(arg, " ")
			if tok != "" {
				require.Contains(t, vars, tok, "step %q uses an unbound token", step)
				tok = vars[tok]
			}
			require.NotZero(t, srv.Lapse(key, tok), "step %q: no such holder", step)
			continue
		}
		n, err := strconv.Atoi(step[:1])
		require.NoError(t, err, "step %q", step)
		op := step[1:]
		switch {
		case strings.HasPrefix(op, ">> "):
			raw, err := strconv.Unquote(op[3:])
			require.NoError(t, err, "step %q", step)
			get(n).write(raw)
		case strings.HasPrefix(op, "> "):
			parts := strings.SplitN(tokenVar.ReplaceAllStringFunc(op[2:], func(v string) string {
				require.Contains(t, vars, v, "step %q uses an unbound token", step)
				return vars[v]
			}), " ", 3)
			for len(parts) < 3 {
				parts = append(parts, "")
			}
			get(n).write(parts[0] + "\n" + parts[1] + "\n" + parts[2] + "\n")
		case op == "<closed":
			get(n).expectClosed()
		case strings.HasPrefix(op, "< "):
			matchReply(t, step, get(n).read(), op[2:], vars)
		case op == "~":
			c := get(n)
			c.expectSilent()
			waitPeer(t, srv, c.nc.LocalAddr().String(), step, func(open, waiting bool) bool { return waiting })
		case op == " close":
			// The server must have the connection before the close, and
			// have released it after: until then a request it read from
			// it could still queue, and be granted to a dead wait.
			c := get(n)
			addr := c.nc.LocalAddr().String()
			waitPeer(t, srv, addr, step, func(open, waiting bool) bool { return open })
			c.nc.Close()
			waitPeer(t, srv, addr, step, func(open, waiting bool) bool { return !open })
		case op == " hangup":
			get(n).nc.Close()
		case op == " halfclose":
			require.NoError(t, get(n).nc.(interface{ CloseWrite() error }).CloseWrite(), "step %q", step)
		default:
			t.Fatalf("bad step %q", step)
		}
	}
}

// waitPeer waits until the server's view of the client connection whose
// local address is addr satisfies cond: in a bubble, until the server has
// done all it can, and then cond must hold; on TCP, by polling, failing
// the test after replyTimeout.
func waitPeer(t *testing.T, srv *testServer, addr, step string, cond func(open, waiting bool) bool) {
	t.Helper()
	if srv.net != nil {
		synctest.Wait()
		require.Truef(t, cond(srv.PeerState(addr)), "step %q: the server's view of the connection is not as it should be", step)
		return
	}
	require.Eventuallyf(t, func() bool { return cond(srv.PeerState(addr)) }, replyTimeout, time.Millisecond,
		"step %q: the server's view of the connection never changed", step)
}

func matchReply(t *testing.T, step, got, want string, vars map[string]string) {
	t.Helper()
	gw, ww := strings.Fields(got), strings.Fields(want)
	require.Lenf(t, gw, len(ww), "step %q: got reply %q", step, got)
	for i, w := range ww {
		switch {
		case tokenVar.MatchString(w) && len(w) == 2:
			require.Regexpf(t, `^[0-9a-f]{32}$`, gw[i], "step %q: got reply %q", step, got)
			if prev, ok := vars[w]; ok {
				require.Equalf(t, prev, gw[i], "step %q: token %s changed", step, w)
			}
			vars[w] = gw[i]
		case w == "*":
		case w == "~":
			_, err := strconv.Atoi(gw[i])
			require.NoErrorf(t, err, "step %q: got reply %q", step, got)
		default:
			require.Equalf(t, w, gw[i], "step %q: got reply %q", step, got)
		}
	}
}
