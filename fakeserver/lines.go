package fakeserver

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/dflock-go/dflock/wire"
)

// errLineTooLong is a request line over wire.MaxLineLen bytes: answered
// "error", then the connection is closed.
var errLineTooLong = errors.New("fakeserver: line too long")

// lineReader reads request lines the way the real server does, which a
// client can tell apart from other ways:
//
//   - Its buffer is 4 KiB, as the real server's: what a client sent beyond
//     a line that gets it closed is read in (up to that size) and dropped,
//     so the close is a FIN. A smaller buffer would leave those bytes in
//     the socket, and closing a socket with unread data sends an RST.
//   - A line over the limit is read on to its '\n' (or until the read
//     timeout or the end of the stream) before it is refused: the "error"
//     reply comes only then, not as soon as the limit is passed.
type lineReader struct {
	br *bufio.Reader
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 4096)}
}

// readLine returns the next line without its '\n' and trailing '\r's,
// valid until the next call. A line longer than wire.MaxLineLen (a '\r'
// counts) is errLineTooLong; a read error within a line no longer than
// that is returned as is (a timeout, io.EOF, io.ErrUnexpectedEOF).
func (lr *lineReader) readLine() ([]byte, error) {
	line, err := lr.br.ReadSlice('\n')
	if err == nil {
		line = line[:len(line)-1]
		if len(line) > wire.MaxLineLen {
			return nil, errLineTooLong
		}
		return bytes.TrimRight(line, "\r"), nil
	}
	if err != bufio.ErrBufferFull && len(line) <= wire.MaxLineLen {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	// Over the limit: drop the rest of the line, as far as it comes.
	for err == bufio.ErrBufferFull {
		_, err = lr.br.ReadSlice('\n')
	}
	return nil, errLineTooLong
}

// buffered returns the bytes read from the connection but not yet
// returned as lines, valid until the next read.
func (lr *lineReader) buffered() []byte {
	b, _ := lr.br.Peek(lr.br.Buffered())
	return b
}

// hasLines reports whether n complete lines are buffered, which readLine
// returns without touching the connection.
func (lr *lineReader) hasLines(n int) bool {
	b := lr.buffered()
	for ; n > 0; n-- {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return false
		}
		b = b[i+1:]
	}
	return true
}
