package wire_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/wire"
)

func TestParseResponse(t *testing.T) {
	cases := []struct {
		cmd  wire.Command
		line string
		want wire.Response
	}{
		{wire.CmdLock, "ok " + tok + " 33", wire.Response{Status: wire.StatusOK, Token: tok, Lease: 33}},
		{wire.CmdSemLock, "ok " + tok + " 5", wire.Response{Status: wire.StatusOK, Token: tok, Lease: 5}},
		{wire.CmdWait, "ok " + tok + " 1", wire.Response{Status: wire.StatusOK, Token: tok, Lease: 1}},
		{wire.CmdSemWait, "ok " + tok + " 2147483647", wire.Response{Status: wire.StatusOK, Token: tok, Lease: wire.MaxSeconds}},
		{wire.CmdEnqueue, "acquired " + tok + " 33", wire.Response{Status: wire.StatusAcquired, Token: tok, Lease: 33}},
		{wire.CmdSemEnqueue, "queued", wire.Response{Status: wire.StatusQueued}},
		{wire.CmdRelease, "ok", wire.Response{Status: wire.StatusOK}},
		{wire.CmdSemRelease, "ok", wire.Response{Status: wire.StatusOK}},
		{wire.CmdRenew, "ok 60", wire.Response{Status: wire.StatusOK, Lease: 60}},
		{wire.CmdSemRenew, "ok 33", wire.Response{Status: wire.StatusOK, Lease: 33}},
		{wire.CmdAuth, "ok", wire.Response{Status: wire.StatusOK}},
		{wire.CmdStats, `ok {"connections":1}`, wire.Response{Status: wire.StatusOK, Body: `{"connections":1}`}},
	}
	for _, c := range cases {
		t.Run(c.cmd.String()+"/"+c.line, func(t *testing.T) {
			got, err := wire.ParseResponse(c.cmd, []byte(c.line))
			require.NoError(t, err)
			c.want.Cmd = c.cmd
			assert.Equal(t, c.want, got)
			assert.NoError(t, got.Err())
			assert.Equal(t, c.line+"\n", string(got.Append(nil)))
		})
	}
}

func TestParseResponseFailures(t *testing.T) {
	cases := []struct {
		cmd      wire.Command
		line     string
		sentinel error
	}{
		{wire.CmdLock, "timeout", wire.ErrTimeout},
		{wire.CmdLock, "error_max_locks", wire.ErrMaxLocks},
		{wire.CmdLock, "error_max_waiters", wire.ErrMaxWaiters},
		{wire.CmdSemLock, "error_limit_mismatch", wire.ErrLimitMismatch},
		{wire.CmdLock, "error_auth", wire.ErrAuth},
		{wire.CmdRelease, "error", wire.ErrServer},
		{wire.CmdRenew, "error", wire.ErrServer},
		{wire.CmdEnqueue, "error_already_enqueued", wire.ErrAlreadyEnqueued},
		{wire.CmdSemEnqueue, "error_max_locks", wire.ErrMaxLocks},
		{wire.CmdWait, "error_not_enqueued", wire.ErrNotEnqueued},
		{wire.CmdSemWait, "error_lease_expired", wire.ErrLeaseExpired},
		{wire.CmdWait, "timeout", wire.ErrTimeout},
		{wire.CmdAuth, "error_auth", wire.ErrAuth},
		{wire.CmdStats, "error", wire.ErrServer},
	}
	for _, c := range cases {
		t.Run(c.cmd.String()+"/"+c.line, func(t *testing.T) {
			got, err := wire.ParseResponse(c.cmd, []byte(c.line))
			require.NoError(t, err, "a well-formed failure is not a parse error")
			rerr := got.Err()
			require.ErrorIs(t, rerr, c.sentinel)
			var se *wire.ServerError
			require.ErrorAs(t, rerr, &se)
			assert.Equal(t, c.line, se.Reply())
			assert.Equal(t, c.cmd, se.Cmd)
			assert.Contains(t, rerr.Error(), c.line)
			assert.Equal(t, c.line+"\n", string(got.Append(nil)))
		})
	}
}

func TestParseResponseMalformed(t *testing.T) {
	cases := []struct {
		cmd  wire.Command
		line string
	}{
		{wire.CmdLock, ""},
		{wire.CmdLock, "ok"},
		{wire.CmdLock, "ok " + tok},
		{wire.CmdLock, "ok " + tok + " 0"},
		{wire.CmdLock, "ok " + tok + " -1"},
		{wire.CmdLock, "ok " + tok + " 033"},
		{wire.CmdLock, "ok " + tok + " 33 extra"},
		{wire.CmdLock, "ok " + tok + " 99999999999"},
		{wire.CmdLock, "ok  33"},
		{wire.CmdLock, "ok tok\x01en 33"},
		{wire.CmdLock, "acquired " + tok + " 33"},
		{wire.CmdLock, "queued"},
		{wire.CmdLock, "error_not_enqueued"},
		{wire.CmdLock, "OK " + tok + " 33"},
		{wire.CmdLock, "timeout now"},
		{wire.CmdRelease, "ok " + tok},
		{wire.CmdRelease, "timeout"},
		{wire.CmdRenew, "ok"},
		{wire.CmdRenew, "ok x"},
		{wire.CmdEnqueue, "ok " + tok + " 33"},
		{wire.CmdEnqueue, "queued " + tok},
		{wire.CmdEnqueue, "acquired"},
		{wire.CmdWait, "queued"},
		{wire.CmdStats, "ok"},
		{wire.CmdStats, "ok "},
		{wire.CmdAuth, "ok 1"},
		{0, "ok"},
		{wire.CmdLock, "banana"},
	}
	for _, c := range cases {
		t.Run(c.cmd.String()+"/"+c.line, func(t *testing.T) {
			_, err := wire.ParseResponse(c.cmd, []byte(c.line))
			require.ErrorIs(t, err, wire.ErrMalformedReply)
			var re *wire.ReplyError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, c.line, re.Reply)
			assert.Contains(t, err.Error(), c.cmd.String())
		})
	}
}

func TestReplyErrorCutsLongReplies(t *testing.T) {
	long := "ok " + strings.Repeat("x", 10000)
	_, err := wire.ParseResponse(wire.CmdRelease, []byte(long))
	var re *wire.ReplyError
	require.ErrorAs(t, err, &re)
	assert.Len(t, re.Reply, 128)
}

func TestFailureErrorsAreDistinct(t *testing.T) {
	sentinels := []error{wire.ErrTimeout, wire.ErrServer, wire.ErrAuth, wire.ErrMaxLocks, wire.ErrMaxWaiters,
		wire.ErrLimitMismatch, wire.ErrAlreadyEnqueued, wire.ErrNotEnqueued, wire.ErrLeaseExpired}
	resp := wire.Response{Cmd: wire.CmdLock, Status: wire.StatusTimeout}
	for _, s := range sentinels[1:] {
		assert.False(t, errors.Is(resp.Err(), s), s.Error())
	}
}

func TestStatsRoundTrip(t *testing.T) {
	body, err := wire.AppendStats(nil, wire.Stats{Connections: 2})
	require.NoError(t, err)
	assert.Equal(t, `{"connections":2,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}`, string(body))

	in := wire.Stats{
		Connections:    3,
		Locks:          []wire.LockInfo{{Key: "a", OwnerConnID: 7, LeaseExpiresInS: 12.5, Waiters: 1}},
		Semaphores:     []wire.SemaphoreInfo{{Key: "s", Limit: 3, Holders: 2, Waiters: 0}},
		IdleLocks:      []wire.IdleInfo{{Key: "b", IdleS: 4}},
		IdleSemaphores: []wire.IdleInfo{},
	}
	body, err = wire.AppendStats(nil, in)
	require.NoError(t, err)
	out, err := wire.ParseStats(string(body))
	require.NoError(t, err)
	assert.Equal(t, in, out)

	_, err = wire.ParseStats("{not json")
	assert.ErrorIs(t, err, wire.ErrMalformedReply)
}
