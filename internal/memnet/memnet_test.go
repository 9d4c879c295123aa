package memnet_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dflock-go/dflock/internal/memnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pair dials a fresh listener and returns both ends, closed when the test
// ends.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	nw := memnet.New()
	ln, err := nw.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	client, err = nw.Dial(t.Context(), "tcp", ln.Addr().String())
	require.NoError(t, err)
	server, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

// readAll reads until n bytes or an error.
func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	require.NoError(t, err)
	return string(b)
}

// TestConn: what each end sees after each way of ending or using a
// connection, as a TCP socket would show it.
func TestConn(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, c, s net.Conn)
	}{
		{"writes are buffered and return at once", func(t *testing.T, c, s net.Conn) {
			for _, m := range []string{"one ", "two ", "three"} {
				n, err := c.Write([]byte(m))
				require.NoError(t, err)
				assert.Equal(t, len(m), n)
			}
			assert.Equal(t, "one two three", readN(t, s, 13))
			_, err := s.Write([]byte("back"))
			require.NoError(t, err)
			assert.Equal(t, "back", readN(t, c, 4))
		}},
		{"a short buffer reads what fits", func(t *testing.T, c, s net.Conn) {
			c.Write([]byte("abcdef"))
			b := make([]byte, 4)
			n, err := s.Read(b)
			require.NoError(t, err)
			assert.Equal(t, "abcd", string(b[:n]))
			n, err = s.Read(b)
			require.NoError(t, err)
			assert.Equal(t, "ef", string(b[:n]))
		}},
		{"close: the peer drains, then EOF", func(t *testing.T, c, s net.Conn) {
			c.Write([]byte("bye"))
			require.NoError(t, c.Close())
			assert.Equal(t, "bye", readN(t, s, 3))
			_, err := s.Read(make([]byte, 1))
			assert.ErrorIs(t, err, io.EOF)
		}},
		{"close twice fails the second time", func(t *testing.T, c, s net.Conn) {
			require.NoError(t, c.Close())
			assert.ErrorIs(t, c.Close(), net.ErrClosed)
		}},
		{"calls on a closed end fail", func(t *testing.T, c, s net.Conn) {
			c.Close()
			_, err := c.Read(make([]byte, 1))
			assert.ErrorIs(t, err, net.ErrClosed)
			_, err = c.Write([]byte("x"))
			assert.ErrorIs(t, err, net.ErrClosed)
			assert.ErrorIs(t, c.SetDeadline(time.Now()), net.ErrClosed)
		}},
		{"a write to a closed peer is dropped, the next fails", func(t *testing.T, c, s net.Conn) {
			s.Close()
			n, err := c.Write([]byte("lost"))
			require.NoError(t, err, "the reset has not come back yet")
			assert.Equal(t, 4, n)
			_, err = c.Write([]byte("fails"))
			assert.ErrorIs(t, err, syscall.EPIPE)
			_, err = c.Read(make([]byte, 1))
			assert.ErrorIs(t, err, io.EOF)
		}},
		{"half close: the peer reads EOF and can still answer", func(t *testing.T, c, s net.Conn) {
			c.Write([]byte("req"))
			require.NoError(t, c.(interface{ CloseWrite() error }).CloseWrite())
			assert.Equal(t, "req", readN(t, s, 3))
			_, err := s.Read(make([]byte, 1))
			assert.ErrorIs(t, err, io.EOF)
			s.Write([]byte("reply"))
			assert.Equal(t, "reply", readN(t, c, 5))
			_, err = c.Write([]byte("more"))
			assert.ErrorIs(t, err, syscall.EPIPE)
		}},
		{"addresses name both ends", func(t *testing.T, c, s net.Conn) {
			assert.Equal(t, c.LocalAddr().String(), s.RemoteAddr().String())
			assert.Equal(t, c.RemoteAddr().String(), s.LocalAddr().String())
			assert.Equal(t, "memnet", c.LocalAddr().Network())
			assert.NotEqual(t, c.LocalAddr().String(), c.RemoteAddr().String())
		}},
		{"concurrent writes stay whole", func(t *testing.T, c, s net.Conn) {
			msg := strings.Repeat("x", 1000) + "\n"
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range 100 {
						c.Write([]byte(msg))
					}
				})
			}
			got := readN(t, s, 800*len(msg))
			wg.Wait()
			assert.Equal(t, strings.Repeat(msg, 800), got)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, s := pair(t)
				tc.run(t, c, s)
			})
		})
	}
}

// TestDeadlines: deadlines run on the bubble's clock, to the nanosecond,
// and fail calls with a timeout that matches os.ErrDeadlineExceeded.
func TestDeadlines(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, c, s net.Conn)
	}{
		{"a read times out at its deadline", func(t *testing.T, c, s net.Conn) {
			start := time.Now()
			s.SetReadDeadline(start.Add(3 * time.Second))
			_, err := s.Read(make([]byte, 1))
			assert.True(t, isTimeout(err), "%v", err)
			assert.Equal(t, 3*time.Second, time.Since(start))
		}},
		{"a deadline moved while a read waits moves for it", func(t *testing.T, c, s net.Conn) {
			start := time.Now()
			s.SetReadDeadline(start.Add(time.Second))
			go func() {
				time.Sleep(500 * time.Millisecond)
				s.SetReadDeadline(start.Add(5 * time.Second))
			}()
			_, err := s.Read(make([]byte, 1))
			assert.True(t, isTimeout(err))
			assert.Equal(t, 5*time.Second, time.Since(start))
		}},
		{"a deadline set in the past fails a waiting read at once", func(t *testing.T, c, s net.Conn) {
			start := time.Now()
			go func() {
				time.Sleep(time.Second)
				s.SetReadDeadline(time.Unix(1, 0))
			}()
			_, err := s.Read(make([]byte, 1))
			assert.True(t, isTimeout(err))
			assert.Equal(t, time.Second, time.Since(start))
		}},
		{"a passed deadline fails a read even with bytes waiting, until reset", func(t *testing.T, c, s net.Conn) {
			s.SetReadDeadline(time.Now().Add(time.Second))
			time.Sleep(time.Second)
			c.Write([]byte("x"))
			_, err := s.Read(make([]byte, 1))
			assert.True(t, isTimeout(err))
			s.SetReadDeadline(time.Time{})
			assert.Equal(t, "x", readN(t, s, 1))
		}},
		{"bytes before the deadline are read", func(t *testing.T, c, s net.Conn) {
			s.SetReadDeadline(time.Now().Add(time.Second))
			go func() {
				time.Sleep(999 * time.Millisecond)
				c.Write([]byte("x"))
			}()
			assert.Equal(t, "x", readN(t, s, 1))
		}},
		{"a cleared deadline never passes", func(t *testing.T, c, s net.Conn) {
			s.SetDeadline(time.Now().Add(time.Second))
			s.SetDeadline(time.Time{})
			go func() {
				time.Sleep(time.Hour)
				c.Write([]byte("x"))
			}()
			assert.Equal(t, "x", readN(t, s, 1))
		}},
		{"a full buffer holds a write up until the peer reads", func(t *testing.T, c, s net.Conn) {
			big := make([]byte, memnet.BufferSize+10)
			done := make(chan int)
			go func() {
				n, err := c.Write(big)
				assert.NoError(t, err)
				done <- n
			}()
			synctest.Wait()
			select {
			case <-done:
				t.Fatal("a write over the buffer returned before any read")
			default:
			}
			readN(t, s, 10)
			assert.Equal(t, len(big), <-done)
			readN(t, s, memnet.BufferSize)
		}},
		{"a write held up by a full buffer times out at its deadline", func(t *testing.T, c, s net.Conn) {
			start := time.Now()
			c.SetWriteDeadline(start.Add(2 * time.Second))
			n, err := c.Write(make([]byte, memnet.BufferSize+10))
			assert.True(t, isTimeout(err))
			assert.Equal(t, memnet.BufferSize, n, "what fitted went")
			assert.Equal(t, 2*time.Second, time.Since(start))
		}},
		{"closing an end ends its waiting read", func(t *testing.T, c, s net.Conn) {
			go func() {
				time.Sleep(time.Second)
				s.Close()
			}()
			_, err := s.Read(make([]byte, 1))
			assert.ErrorIs(t, err, net.ErrClosed)
		}},
		{"the peer closing ends a waiting read with EOF", func(t *testing.T, c, s net.Conn) {
			go func() {
				time.Sleep(time.Second)
				c.Close()
			}()
			_, err := s.Read(make([]byte, 1))
			assert.ErrorIs(t, err, io.EOF)
		}},
		{"a waiting read is durably blocked", func(t *testing.T, c, s net.Conn) {
			got := make(chan string)
			go func() {
				b := make([]byte, 1)
				n, _ := s.Read(b)
				got <- string(b[:n])
			}()
			synctest.Wait() // returns only if the reader is durably blocked
			time.Sleep(time.Hour)
			c.Write([]byte("x"))
			assert.Equal(t, "x", <-got)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, s := pair(t)
				tc.run(t, c, s)
			})
		})
	}
}

func TestListener(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, nw *memnet.Network)
	}{
		{"dial with nobody listening is refused", func(t *testing.T, nw *memnet.Network) {
			_, err := nw.Dial(t.Context(), "tcp", "127.0.0.1:6388")
			assert.ErrorIs(t, err, syscall.ECONNREFUSED)
			var op *net.OpError
			require.ErrorAs(t, err, &op)
			assert.Equal(t, "dial", op.Op)
			assert.Equal(t, "127.0.0.1:6388", op.Addr.String())
		}},
		{"dial does not wait for Accept", func(t *testing.T, nw *memnet.Network) {
			ln, err := nw.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			c, err := nw.Dial(t.Context(), "tcp", ln.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			c.Write([]byte("early"))
			s, err := ln.Accept()
			require.NoError(t, err)
			defer s.Close()
			assert.Equal(t, "early", readN(t, s, 5))
		}},
		{"close ends a waiting Accept", func(t *testing.T, nw *memnet.Network) {
			ln, err := nw.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			go func() {
				time.Sleep(time.Second)
				ln.Close()
			}()
			_, err = ln.Accept()
			assert.ErrorIs(t, err, net.ErrClosed)
			assert.ErrorIs(t, ln.Close(), net.ErrClosed, "closed once")
		}},
		{"close resets connections not yet accepted", func(t *testing.T, nw *memnet.Network) {
			ln, err := nw.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			c, err := nw.Dial(t.Context(), "tcp", ln.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			ln.Close()
			_, err = c.Read(make([]byte, 1))
			assert.ErrorIs(t, err, io.EOF)
			_, err = nw.Dial(t.Context(), "tcp", ln.Addr().String())
			assert.ErrorIs(t, err, syscall.ECONNREFUSED, "nobody listens any more")
		}},
		{"an address is free again once closed", func(t *testing.T, nw *memnet.Network) {
			ln, err := nw.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			addr := ln.Addr().String()
			_, err = nw.Listen("tcp", addr)
			assert.ErrorIs(t, err, syscall.EADDRINUSE)
			accepted, err := nw.Dial(t.Context(), "tcp", addr)
			require.NoError(t, err)
			s, err := ln.Accept()
			require.NoError(t, err)
			ln.Close()
			again, err := nw.Listen("tcp", addr)
			require.NoError(t, err, "re-listen on the same address")
			defer again.Close()
			c, err := nw.Dial(t.Context(), "tcp", addr)
			require.NoError(t, err)
			defer c.Close()
			s2, err := again.Accept()
			require.NoError(t, err)
			defer s2.Close()
			accepted.Write([]byte("old"))
			assert.Equal(t, "old", readN(t, s, 3), "accepted connections outlive their listener")
			accepted.Close()
			s.Close()
		}},
		{"port 0 picks a fresh port each time", func(t *testing.T, nw *memnet.Network) {
			seen := map[string]bool{}
			for range 3 {
				ln, err := nw.Listen("tcp", "127.0.0.1:0")
				require.NoError(t, err)
				a := ln.Addr().String()
				assert.False(t, seen[a], a)
				assert.NotEqual(t, "127.0.0.1:0", a)
				seen[a] = true
				ln.Close()
			}
		}},
		{"a listener on all hosts takes dials to any", func(t *testing.T, nw *memnet.Network) {
			ln, err := nw.Listen("tcp", ":7000")
			require.NoError(t, err)
			defer ln.Close()
			c, err := nw.Dial(t.Context(), "tcp", "127.0.0.1:7000")
			require.NoError(t, err)
			c.Close()
		}},
		{"dialling ends have unique addresses", func(t *testing.T, nw *memnet.Network) {
			ln, err := nw.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			seen := map[string]bool{}
			for range 3 {
				c, err := nw.Dial(t.Context(), "tcp", ln.Addr().String())
				require.NoError(t, err)
				s, err := ln.Accept()
				require.NoError(t, err)
				assert.False(t, seen[c.LocalAddr().String()])
				seen[c.LocalAddr().String()] = true
				assert.Equal(t, c.LocalAddr().String(), s.RemoteAddr().String())
				c.Close()
				s.Close()
			}
		}},
		{"a cancelled dial fails", func(t *testing.T, nw *memnet.Network) {
			ln, err := nw.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			_, err = nw.Dial(ctx, "tcp", ln.Addr().String())
			assert.ErrorIs(t, err, context.Canceled)
		}},
		{"bad addresses are refused", func(t *testing.T, nw *memnet.Network) {
			_, err := nw.Listen("tcp", "no-port")
			assert.Error(t, err)
			_, err = nw.Listen("tcp", "127.0.0.1:70000")
			assert.Error(t, err)
			_, err = nw.Dial(t.Context(), "tcp", "no-port")
			assert.Error(t, err)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { tc.run(t, memnet.New()) })
		})
	}
}

// TestOutsideABubble: on the real clock, memnet is an ordinary in-memory
// network.
func TestOutsideABubble(t *testing.T) {
	c, s := pair(t)
	c.Write([]byte("x"))
	assert.Equal(t, "x", readN(t, s, 1))
	s.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := s.Read(make([]byte, 1))
	assert.True(t, isTimeout(err))
}
