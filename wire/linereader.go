package wire

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
)

// LineReader reads '\n'-terminated lines with a cap on their length.
//
// Servers read requests with a cap of [MaxLineLen]; clients read replies
// with a cap of [MaxResponseLen]. Its buffer stays small (4 KiB) however
// large the cap: longer lines are gathered in a scratch buffer that is kept
// for the next long line.
type LineReader struct {
	br      *bufio.Reader
	max     int
	scratch []byte
}

// NewLineReader returns a reader of lines of at most max bytes from r (a
// trailing '\r' counts, the '\n' does not).
func NewLineReader(r io.Reader, max int) *LineReader {
	size := 4096
	if max+1 < size {
		size = max + 1
		if size < 16 {
			size = 16 // bufio's minimum
		}
	}
	return &LineReader{br: bufio.NewReaderSize(r, size), max: max}
}

// ReadLine returns the next line without its '\n' and without trailing
// '\r's. The slice is valid until the next call.
//
// A line longer than the cap is an error matching [ErrLineTooLong]; the
// stream is then out of step and must be closed. End of input before any
// byte of a line is io.EOF; within a line, io.ErrUnexpectedEOF.
func (lr *LineReader) ReadLine() ([]byte, error) {
	return lr.ReadLineLimit(lr.max)
}

// ReadLineLimit is ReadLine with a cap of its own for this line, for a
// reader whose lines differ in their bounds (a client expecting a stats
// reply, which has none).
func (lr *LineReader) ReadLineLimit(max int) ([]byte, error) {
	if cap(lr.scratch) > 64<<10 {
		lr.scratch = nil // a stats reply's megabytes are not kept for ever
	}
	line, err := lr.br.ReadSlice('\n')
	if err == nil {
		return lr.finish(line[:len(line)-1], max)
	}
	if err != bufio.ErrBufferFull {
		return nil, lr.eof(len(line), err)
	}
	lr.scratch = append(lr.scratch[:0], line...)
	for {
		if len(lr.scratch) > max {
			return nil, lr.tooLong(max)
		}
		line, err = lr.br.ReadSlice('\n')
		lr.scratch = append(lr.scratch, line...)
		switch err {
		case nil:
			return lr.finish(lr.scratch[:len(lr.scratch)-1], max)
		case bufio.ErrBufferFull:
		default:
			return nil, lr.eof(len(lr.scratch), err)
		}
	}
}

func (lr *LineReader) finish(line []byte, max int) ([]byte, error) {
	if len(line) > max {
		return nil, lr.tooLong(max)
	}
	return bytes.TrimRight(line, "\r"), nil
}

func (lr *LineReader) tooLong(max int) error {
	return &RequestError{Field: "line", Value: "", Rule: "longer than " + strconv.Itoa(max) + " bytes", TooLong: true}
}

func (lr *LineReader) eof(n int, err error) error {
	if err == io.EOF && n > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}
