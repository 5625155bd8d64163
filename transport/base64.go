package transport

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
)

// Base64Error is a body that is not base64 in any of the accepted forms.
type Base64Error struct{ Msg string }

func (e *Base64Error) Error() string { return "invalid base64: " + e.Msg }

// NewBase64Reader decodes a base64 body as it streams in. It accepts what
// clients in the field send: the standard or URL-safe alphabet, with or
// without padding, broken into lines or with spaces, as a bare string or a
// JSON string (with \/ and \n escapes), optionally behind a
// "data:audio/mpeg;base64," prefix.
func NewBase64Reader(body io.Reader) io.Reader {
	return base64.NewDecoder(base64.RawStdEncoding, &b64Filter{br: bufio.NewReaderSize(body, 4096)})
}

// b64Decoder is a reusable NewBase64Reader, for the handler's pool.
type b64Decoder struct {
	filter b64Filter
	br     *bufio.Reader
	in     [4096]byte // filtered base64, decoded whole 4-character groups at a time
}

func newB64Decoder() *b64Decoder { return &b64Decoder{br: bufio.NewReaderSize(nil, 4096)} }

// decode appends the decoded body to dst. It allocates nothing of its own
// (base64.NewDecoder allocated 2 KiB per body): the characters go through
// d.in and decode straight into dst's spare room.
func (d *b64Decoder) decode(dst *bytes.Buffer, body io.Reader) error {
	d.br.Reset(body)
	defer d.br.Reset(nil)
	d.filter = b64Filter{br: d.br}
	n, done := 0, int64(0) // characters in d.in; characters decoded before them
	for {
		m, err := d.filter.Read(d.in[n:])
		n += m
		eof := err == io.EOF
		if err != nil && !eof {
			return err
		}
		whole := n
		if !eof {
			whole -= n % 4 // a group cut here is completed by the next read
		}
		if whole > 0 {
			size := base64.RawStdEncoding.DecodedLen(whole)
			dst.Grow(size)
			out := dst.AvailableBuffer()[:size]
			k, err := base64.RawStdEncoding.Decode(out, d.in[:whole])
			dst.Write(out[:k])
			if ce, ok := err.(base64.CorruptInputError); ok {
				return base64.CorruptInputError(done + int64(ce))
			} else if err != nil {
				return err
			}
			n = copy(d.in[:], d.in[whole:n])
			done += int64(whole)
		}
		if eof {
			return nil
		}
	}
}

// b64Filter turns the accepted forms into unpadded standard base64.
type b64Filter struct {
	br      *bufio.Reader
	started bool
	json    bool // inside a JSON string
	closed  bool // the JSON string's closing quote was seen
	padded  bool // '=' was seen: only padding and spaces may follow
	err     error
}

const maxDataURLPrefix = 200

func isSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f' || c == '\v'
}

func (f *b64Filter) fail(format string, args ...any) error {
	f.err = &Base64Error{Msg: fmt.Sprintf(format, args...)}
	return f.err
}

// start consumes leading spaces, an opening quote and a data URL prefix.
func (f *b64Filter) start() error {
	f.started = true
	for {
		c, err := f.br.ReadByte()
		if err != nil {
			return err
		}
		if isSpace(c) {
			continue
		}
		if c == '"' && !f.json {
			f.json = true
			continue
		}
		f.br.UnreadByte()
		break
	}
	if head, _ := f.br.Peek(5); string(head) == "data:" {
		for i := 0; ; i++ {
			c, err := f.br.ReadByte()
			if err != nil || i > maxDataURLPrefix {
				return f.fail("data URL without a comma before the data")
			}
			if c == ',' {
				break
			}
		}
	}
	return nil
}

// Read fills p with base64 characters of the standard alphabet.
func (f *b64Filter) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if !f.started {
		if err := f.start(); err != nil {
			if err == io.EOF {
				return 0, io.EOF
			}
			f.err = err
			return 0, err
		}
	}
	n := 0
	for n < len(p) {
		if n > 0 && f.br.Buffered() == 0 {
			break // hand over what we have rather than block on the network
		}
		c, err := f.br.ReadByte()
		if err == io.EOF {
			if f.json && !f.closed {
				return n, f.fail("JSON string without a closing quote")
			}
			f.err = io.EOF
			return n, nil
		}
		if err != nil {
			f.err = err
			return n, err
		}
		if f.json && c == '\\' {
			if c, err = f.unescape(); err != nil {
				return n, err
			}
		} else if f.json && c == '"' {
			f.closed = true
			f.padded = true // the string is over: only spaces may follow
			continue
		}
		switch {
		case isSpace(c):
		case c == '=' && !f.closed:
			f.padded = true
		case f.padded:
			if f.closed {
				return n, f.fail("data after the closing quote")
			}
			return n, f.fail("data after padding")
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			p[n] = c
			n++
		case c == '-':
			p[n] = '+'
			n++
		case c == '_':
			p[n] = '/'
			n++
		default:
			return n, f.fail("unexpected character %q", c)
		}
	}
	return n, nil
}

// unescape reads a JSON escape after its backslash and returns the
// character it stands for; escaped whitespace comes back as a space.
func (f *b64Filter) unescape() (byte, error) {
	c, err := f.br.ReadByte()
	if err != nil {
		return 0, f.fail("JSON string ends inside an escape")
	}
	switch c {
	case '/', '\\':
		return c, nil
	case 'n', 'r', 't', 'b', 'f':
		return ' ', nil
	case 'u':
		var hex [4]byte
		if _, err := io.ReadFull(f.br, hex[:]); err != nil {
			return 0, f.fail("JSON string ends inside an escape")
		}
		var r int
		for _, h := range hex {
			switch {
			case h >= '0' && h <= '9':
				r = r<<4 | int(h-'0')
			case h >= 'a' && h <= 'f':
				r = r<<4 | int(h-'a'+10)
			case h >= 'A' && h <= 'F':
				r = r<<4 | int(h-'A'+10)
			default:
				return 0, f.fail("bad JSON escape \\u%s", hex[:])
			}
		}
		if r >= 0x80 || r == '"' || r == '\\' {
			return 0, f.fail("unexpected character U+%04X", r)
		}
		return byte(r), nil
	}
	return 0, f.fail("bad JSON escape \\%c", c)
}

// base64Problem turns a decoding error into a Base64Error, or returns nil
// if err is not about the encoding (a body too large, a broken connection).
func base64Problem(err error) *Base64Error {
	var be *Base64Error
	if errors.As(err, &be) {
		return be
	}
	var ce base64.CorruptInputError
	if errors.As(err, &ce) {
		return &Base64Error{Msg: fmt.Sprintf("the data is cut or corrupt near character %d", int64(ce))}
	}
	return nil
}
