package wire_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dflock-go/dflock/wire"
)

func TestLineReader(t *testing.T) {
	in := "ok\r\n" + "a\n" + "\n" + strings.Repeat("x", 256) + "\n" + "tail"
	lr := wire.NewLineReader(iotest.OneByteReader(strings.NewReader(in)), 256)
	for _, want := range []string{"ok", "a", "", strings.Repeat("x", 256)} {
		got, err := lr.ReadLine()
		require.NoError(t, err)
		assert.Equal(t, want, string(got))
	}
	_, err := lr.ReadLine()
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)

	lr = wire.NewLineReader(strings.NewReader(""), 256)
	_, err = lr.ReadLine()
	assert.ErrorIs(t, err, io.EOF)
}

func TestLineReaderCap(t *testing.T) {
	cases := []struct {
		name string
		max  int
		line string
		ok   bool
	}{
		{"at cap", 256, strings.Repeat("k", 256), true},
		{"cr counts", 256, strings.Repeat("k", 256) + "\r", false},
		{"over cap", 256, strings.Repeat("k", 257), false},
		{"far over cap", 256, strings.Repeat("k", 100000), false},
		{"stats size", wire.MaxResponseLen, "ok " + strings.Repeat("s", wire.MaxResponseLen-3), true},
		{"stats over", wire.MaxResponseLen, "ok " + strings.Repeat("s", wire.MaxResponseLen), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lr := wire.NewLineReader(strings.NewReader(c.line+"\nnext\n"), c.max)
			got, err := lr.ReadLine()
			if !c.ok {
				require.True(t, errors.Is(err, wire.ErrLineTooLong), "got %v", err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.line, string(got))
			got, err = lr.ReadLine()
			require.NoError(t, err)
			assert.Equal(t, "next", string(got))
		})
	}
}
