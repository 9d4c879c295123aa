package fakeserver_test

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/dflock-go/dflock/fakeserver"
	"github.com/dflock-go/dflock/wire"
)

// BenchmarkPipelinedLockRelease measures the fakeserver's throughput on
// l/r pairs of distinct keys over 4 connections, each pipelining a window
// of requests: one write of window try-locks, their replies, one write of
// window releases, their replies. One op is one pair.
func BenchmarkPipelinedLockRelease(b *testing.B) {
	for _, window := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("conns=4/window=%d", window), func(b *testing.B) {
			benchPipelined(b, 4, window)
		})
	}
}

func benchPipelined(b *testing.B, conns, window int) {
	srv, err := fakeserver.Start(fakeserver.Config{MaxLocks: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	var wg sync.WaitGroup
	per := (b.N + conns - 1) / conns
	b.ReportAllocs()
	b.ResetTimer()
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pipelinePairs(srv.Addr(), c, per, window); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*conns)/b.Elapsed().Seconds(), "pairs/s")
}

// pipelinePairs is a raw pipelined client with no client logic in the way.
func pipelinePairs(addr string, id, pairs, window int) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	lr := wire.NewLineReader(bufio.NewReader(nc), wire.MaxResponseLen)
	keys := make([]string, window)
	tokens := make([]string, window)
	for i := range keys {
		keys[i] = "bench-" + strconv.Itoa(id) + "-" + strconv.Itoa(i)
	}
	var buf []byte
	for done := 0; done < pairs; done += window {
		n := min(window, pairs-done)
		buf = buf[:0]
		for i := range n {
			req := wire.Request{Cmd: wire.CmdLock, Key: keys[i]}
			buf, _ = req.Append(buf)
		}
		if _, err := nc.Write(buf); err != nil {
			return err
		}
		for i := range n {
			line, err := lr.ReadLine()
			if err != nil {
				return err
			}
			resp, err := wire.ParseResponse(wire.CmdLock, line)
			if err == nil {
				err = resp.Err()
			}
			if err != nil {
				return err
			}
			tokens[i] = resp.Token
		}
		buf = buf[:0]
		for i := range n {
			req := wire.Request{Cmd: wire.CmdRelease, Key: keys[i], Token: tokens[i]}
			buf, _ = req.Append(buf)
		}
		if _, err := nc.Write(buf); err != nil {
			return err
		}
		for range n {
			line, err := lr.ReadLine()
			if err != nil {
				return err
			}
			if resp, err := wire.ParseResponse(wire.CmdRelease, line); err != nil || resp.Err() != nil {
				return fmt.Errorf("release: %q %v", line, err)
			}
		}
	}
	return nil
}
