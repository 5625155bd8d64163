// Package rtmpplay is a small RTMP subscriber for load tests: it plays a
// live stream and reports each audio, video and data message's timestamp,
// size, first byte and arrival time, and nothing of its payload.
//
// It is written by hand from Adobe's RTMP specification (2012) rather than
// built on github.com/bluenviron/gortmplib v1.0.1 (mediamtx's RTMP
// library), because a benchmark runs about a thousand of these on two
// cores. gortmplib's reader allocates every chunk's header and body and a
// copy of each message, then decodes it into a typed value (parsing AAC
// configs on the way): 4 allocations and ~500 bytes per AAC frame, against
// none here. It also ends the connection on a codec or message type it
// does not decode, and takes the stream name from the URL's #fragment
// rather than the path. Here media payloads are skipped inside the read
// buffer (only their first byte is looked at), control and command
// messages are assembled in a buffer kept per chunk stream, and nothing
// after play waits for a particular reply, so a stream that is not yet
// published, or is republished, just keeps the connection waiting for the
// next message.
package rtmpplay

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Message is one audio or video message as it arrived.
type Message struct {
	Type    byte          // 8 audio, 9 video, 18 data
	TS      time.Duration // RTMP timestamp (ms resolution)
	Size    int           // payload bytes
	Arrived time.Time     // when its last byte was read from the socket
	First   byte          // first payload byte (FLV audio tag flags: codec id in the high nibble)
	Second  byte          // second payload byte (for AAC the packet type: 0 is the sequence header)
}

// Message type ids (RTMP spec 5.4, 7.1).
const (
	typeSetChunkSize     = 1
	typeAbort            = 2
	typeAck              = 3
	typeUserControl      = 4
	typeWindowAckSize    = 5
	typeSetPeerBandwidth = 6
	typeAudio            = 8
	typeVideo            = 9
	typeCommandAMF3      = 17
	typeData             = 18
	typeCommand          = 20
)

const (
	// outChunkSize is what we send with: we never announce another, so
	// the server expects the protocol's default.
	outChunkSize = 128
	// maxBuffered bounds a control or command message, the only kinds
	// kept whole, so that a broken server cannot make us allocate 16 MiB
	// per chunk stream.
	maxBuffered = 1 << 20

	txnConnect      = 1
	txnCreateStream = 2
)

// Play connects to url (rtmp://host:port/app/stream), does the handshake,
// connect, createStream and play, and calls fn for every audio/video/data
// message until ctx ends, the server closes the stream, or an error
// occurs. fn runs on the reading goroutine and must be quick. Play returns
// when the connection ends (nil on ctx end or a clean server close).
func Play(ctx context.Context, url string, fn func(Message)) error {
	addr, app, tcURL, name, err := parseURL(url)
	if err != nil {
		return err
	}
	if fn == nil {
		fn = func(Message) {}
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer nc.Close()
	// A past deadline wakes a blocked Read or Write, and AfterFunc starts
	// no goroutine until ctx ends: one goroutine per subscriber stays true.
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		nc.SetDeadline(time.Unix(1, 0))
		close(woken)
	})
	defer func() {
		if !stop() {
			<-woken // so that no goroutine outlives Play
		}
	}()

	c := newConn(nc, nc, fn)
	c.app, c.tcURL, c.name = app, tcURL, name
	err = c.run()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func parseURL(raw string) (addr, app, tcURL, name string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", "", "", err
	}
	if u.Scheme != "rtmp" || u.Host == "" {
		return "", "", "", "", fmt.Errorf("rtmpplay: %q: want rtmp://host[:port]/app/stream", raw)
	}
	app, name, _ = strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if app == "" || name == "" {
		return "", "", "", "", fmt.Errorf("rtmpplay: %q: want rtmp://host[:port]/app/stream", raw)
	}
	if u.RawQuery != "" {
		name += "?" + u.RawQuery // nginx-rtmp hands play arguments to its callbacks
	}
	addr = u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "1935")
	}
	tcURL = "rtmp://" + u.Host + "/" + app
	if len(tcURL) > math.MaxUint16 || len(name) > math.MaxUint16 {
		return "", "", "", "", fmt.Errorf("rtmpplay: %q: too long for an AMF0 string", raw)
	}
	return addr, app, tcURL, name, nil
}

// socket counts what the server sent, for acknowledgements, and notes
// when it arrived: bufio only reads when its buffer is empty, so the last
// byte of a message always came with the latest read.
type socket struct {
	r  io.Reader
	n  uint64
	at time.Time
}

func (s *socket) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.n += uint64(n)
		s.at = time.Now()
	}
	return n, err
}

// chunkStream is what a chunk stream's headers established so far; fmt 1-3
// headers leave out what stays the same.
type chunkStream struct {
	ts     uint32 // of the message being read, in ms
	delta  uint32 // added by a fmt 3 header that starts a message
	length uint32
	typ    byte
	ext    bool   // the latest fmt 0-2 header had an extended timestamp
	got    uint32 // payload bytes of the message read so far
	first  byte
	second byte
	buf    []byte // payload of a control or command message
}

type conn struct {
	in  socket
	br  *bufio.Reader
	w   io.Writer
	fn  func(Message)
	out []byte // outgoing chunks
	msg []byte // outgoing message body

	chunkSize uint32 // of incoming chunks
	window    uint32 // acknowledge after this many bytes; 0: never
	acked     uint64
	peerBW    uint32 // window we last announced
	streams   map[uint32]*chunkStream

	app, tcURL, name string
}

func newConn(r io.Reader, w io.Writer, fn func(Message)) *conn {
	c := &conn{w: w, fn: fn, chunkSize: 128, streams: map[uint32]*chunkStream{}}
	c.in.r = r
	c.br = bufio.NewReaderSize(&c.in, 4096)
	return c
}

func (c *conn) run() error {
	if err := c.handshake(); err != nil {
		return fmt.Errorf("rtmpplay: handshake: %w", err)
	}
	if err := c.connect(); err != nil {
		return err
	}
	for {
		cs, err := c.readChunk()
		if err == io.EOF {
			return nil // the server closed between chunks
		}
		if err != nil {
			return err
		}
		if cs != nil {
			if err := c.handle(cs); err != nil {
				return err
			}
		}
	}
}

// handshake does the original (pre-digest) handshake: a C1 whose version
// field is zero tells nginx-rtmp and Adobe's servers not to expect the
// digest scheme, which players of live streams do not need.
func (c *conn) handshake() error {
	b := make([]byte, 1+1536)
	b[0] = 3
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	if _, err := io.ReadFull(c.br, b); err != nil {
		return err
	}
	if b[0] != 3 {
		return fmt.Errorf("server speaks RTMP version %d", b[0])
	}
	if _, err := c.w.Write(b[1:]); err != nil { // C2 echoes S1
		return err
	}
	_, err := c.br.Discard(1536) // S2
	return err
}

func (c *conn) peek(n int) ([]byte, error) {
	p, err := c.br.Peek(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return p, err
}

// readChunk reads one chunk and returns its chunk stream when the chunk
// completed a message. io.EOF means the connection ended between chunks.
func (c *conn) readChunk() (*chunkStream, error) {
	b, err := c.br.ReadByte()
	if err != nil {
		return nil, err
	}
	fmtType, csid := b>>6, uint32(b&0x3f)
	switch csid {
	case 0, 1:
		p, err := c.peek(int(csid) + 1)
		if err != nil {
			return nil, err
		}
		csid = 64 + uint32(p[0])
		if len(p) == 2 {
			csid += uint32(p[1]) << 8
		}
		c.br.Discard(len(p))
	}
	cs := c.streams[csid]
	if cs == nil {
		if fmtType != 0 {
			return nil, fmt.Errorf("rtmpplay: chunk stream %d starts with a fmt %d header", csid, fmtType)
		}
		cs = &chunkStream{}
		c.streams[csid] = cs
	}
	if fmtType < 3 && cs.got > 0 {
		return nil, fmt.Errorf("rtmpplay: fmt %d header inside a message on chunk stream %d", fmtType, csid)
	}

	var ts uint32
	if n := [4]int{11, 7, 3, 0}[fmtType]; n > 0 {
		h, err := c.peek(n)
		if err != nil {
			return nil, err
		}
		ts = be24(h)
		if fmtType <= 1 {
			cs.length, cs.typ = be24(h[3:]), h[6]
		}
		// The message stream id (fmt 0) is not needed: a player's
		// connection carries a single stream.
		c.br.Discard(n)
		cs.ext = ts == 0xffffff
		if cs.ext {
			p, err := c.peek(4)
			if err != nil {
				return nil, err
			}
			ts = binary.BigEndian.Uint32(p)
			c.br.Discard(4)
		}
	} else if cs.ext {
		// fmt 3 chunks repeat the extended timestamp (spec 5.3.1.3;
		// nginx-rtmp's play_time_fix, on by default, sends it).
		if _, err := c.peek(4); err != nil {
			return nil, err
		}
		c.br.Discard(4)
	}

	if cs.got == 0 {
		switch fmtType {
		case 0:
			cs.ts, cs.delta = ts, 0
		case 1, 2:
			cs.ts += ts
			cs.delta = ts
		case 3:
			cs.ts += cs.delta
		}
	}

	n := min(cs.length-cs.got, c.chunkSize)
	switch cs.typ {
	case typeAudio, typeVideo, typeData, 15, 16, 19, 22:
		// Reported (8, 9, 18) or ignored (AMF3 data, shared objects,
		// aggregates, which nginx-rtmp does not send to players): the
		// payload is never copied.
		if cs.got == 0 {
			cs.first, cs.second = 0, 0
			if k := min(n, 2); k > 0 {
				p, err := c.peek(int(k))
				if err != nil {
					return nil, err
				}
				cs.first = p[0]
				if k == 2 {
					cs.second = p[1]
				}
			}
		}
		if _, err := c.br.Discard(int(n)); err != nil {
			return nil, unexpected(err)
		}
	default:
		if cs.length > maxBuffered {
			return nil, fmt.Errorf("rtmpplay: %d-byte message of type %d", cs.length, cs.typ)
		}
		if cs.got == 0 {
			cs.buf = slices.Grow(cs.buf[:0], int(cs.length))[:cs.length]
		}
		if _, err := io.ReadFull(c.br, cs.buf[cs.got:cs.got+n]); err != nil {
			return nil, unexpected(err)
		}
	}
	cs.got += n

	// The spec asks for an acknowledgement each time a window's worth
	// has arrived since the last one; nginx-rtmp does not insist, but a
	// server may hold data back until it gets one. Counting what was parsed rather
	// than what bufio read ahead keeps them a window apart.
	if n := c.in.n - uint64(c.br.Buffered()); c.window > 0 && n-c.acked >= uint64(c.window) {
		c.acked = n
		if err := c.send(2, typeAck, 0, binary.BigEndian.AppendUint32(c.msg[:0], uint32(c.acked))); err != nil {
			return nil, err
		}
	}

	if cs.got < cs.length {
		return nil, nil
	}
	cs.got = 0
	return cs, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func be24(p []byte) uint32 { return uint32(p[0])<<16 | uint32(p[1])<<8 | uint32(p[2]) }

func (c *conn) handle(cs *chunkStream) error {
	p := cs.buf
	switch cs.typ {
	case typeAudio, typeVideo, typeData:
		c.fn(Message{Type: cs.typ, TS: time.Duration(cs.ts) * time.Millisecond,
			Size: int(cs.length), Arrived: c.in.at, First: cs.first, Second: cs.second})
	case typeSetChunkSize, typeAbort, typeWindowAckSize, typeSetPeerBandwidth:
		if len(p) < 4 {
			return fmt.Errorf("rtmpplay: %d-byte message of type %d", len(p), cs.typ)
		}
		v := binary.BigEndian.Uint32(p)
		switch cs.typ {
		case typeSetChunkSize:
			v &= 0x7fffffff
			if v == 0 {
				return errors.New("rtmpplay: server set chunk size 0")
			}
			c.chunkSize = min(v, 0xffffff) // larger than any message can be
		case typeAbort:
			if s := c.streams[v]; s != nil {
				s.got = 0
			}
		case typeWindowAckSize:
			c.window = v
		case typeSetPeerBandwidth:
			// The spec has the receiver answer with its own window
			// when the limit changes.
			if v != c.peerBW {
				c.peerBW = v
				return c.send(2, typeWindowAckSize, 0, binary.BigEndian.AppendUint32(c.msg[:0], v))
			}
		}
	case typeUserControl:
		if len(p) >= 6 && binary.BigEndian.Uint16(p) == 6 { // ping request
			return c.send(2, typeUserControl, 0, append(append(c.msg[:0], 0, 7), p[2:6]...))
		}
		// Stream begin/EOF/dry come with every (un)publish: the
		// connection stays, and so do we.
	case typeCommandAMF3:
		if len(p) > 0 {
			return c.command(p[1:]) // AMF0 after a format byte
		}
	case typeCommand:
		return c.command(p)
	}
	return nil
}

// send writes one message as chunks of outChunkSize on chunk stream csid.
func (c *conn) send(csid byte, typ byte, msid uint32, body []byte) error {
	b := c.out[:0]
	for i := 0; ; {
		if i == 0 {
			b = append(b, csid, 0, 0, 0, byte(len(body)>>16), byte(len(body)>>8), byte(len(body)), typ)
			b = binary.LittleEndian.AppendUint32(b, msid) // the one little-endian field
		} else {
			b = append(b, 3<<6|csid)
		}
		n := min(len(body)-i, outChunkSize)
		b = append(b, body[i:i+n]...)
		if i += n; i >= len(body) {
			break
		}
	}
	c.out = b
	c.msg = body[:0]
	_, err := c.w.Write(b)
	return err
}

func (c *conn) connect() error {
	b := amfString(c.msg[:0], "connect")
	b = amfNumber(b, txnConnect)
	b = append(b, 3)
	b = amfString(amfKey(b, "app"), c.app)
	b = amfString(amfKey(b, "flashVer"), "LNX 9,0,124,2")
	b = amfString(amfKey(b, "tcUrl"), c.tcURL)
	b = append(amfKey(b, "fpad"), 1, 0)
	b = amfNumber(amfKey(b, "capabilities"), 15)
	b = amfNumber(amfKey(b, "audioCodecs"), 0x0fff)
	b = amfNumber(amfKey(b, "videoCodecs"), 0xff)
	b = amfNumber(amfKey(b, "videoFunction"), 1)
	b = amfNumber(amfKey(b, "objectEncoding"), 0)
	b = append(b, 0, 0, 9)
	return c.send(3, typeCommand, 0, b)
}

func (c *conn) command(p []byte) error {
	var cmd command
	if err := cmd.decode(p); err != nil {
		return fmt.Errorf("rtmpplay: command: %w", err)
	}
	switch cmd.name {
	case "_result":
		switch cmd.txn {
		case txnConnect:
			b := amfString(c.msg[:0], "createStream")
			b = amfNumber(b, txnCreateStream)
			return c.send(3, typeCommand, 0, append(b, 5))
		case txnCreateStream:
			if len(cmd.nums) == 0 {
				return errors.New("rtmpplay: createStream returned no stream id")
			}
			id := uint32(cmd.nums[0])
			// Set Buffer Length (user control 3) before play, as
			// Flash Player does; some servers hold data back without it.
			b := binary.BigEndian.AppendUint16(c.msg[:0], 3)
			b = binary.BigEndian.AppendUint32(b, id)
			b = binary.BigEndian.AppendUint32(b, 1000)
			if err := c.send(2, typeUserControl, 0, b); err != nil {
				return err
			}
			b = amfString(c.msg[:0], "play")
			b = amfNumber(b, 0)
			b = append(b, 5)
			b = amfString(b, c.name)
			return c.send(8, typeCommand, id, b)
		}
	case "_error":
		switch cmd.txn {
		case txnConnect:
			return fmt.Errorf("rtmpplay: connect refused: %s %s", cmd.code, cmd.description)
		case txnCreateStream:
			return fmt.Errorf("rtmpplay: createStream refused: %s %s", cmd.code, cmd.description)
		}
	case "onStatus":
		// Play.Start, UnpublishNotify and PublishNotify are "status";
		// only a refusal (StreamNotFound, Play.Failed, ...) ends play.
		if cmd.level == "error" {
			return fmt.Errorf("rtmpplay: %s: %s", cmd.code, cmd.description)
		}
	}
	return nil
}

func amfString(b []byte, s string) []byte {
	b = append(b, 2, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

func amfKey(b []byte, k string) []byte {
	b = append(b, byte(len(k)>>8), byte(len(k)))
	return append(b, k...)
}

func amfNumber(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0), math.Float64bits(f))
}

// command is what a player needs of a command from the server.
type command struct {
	name                     string
	txn                      float64
	nums                     []float64 // top-level numbers after txn: createStream's stream id
	level, code, description string    // of the info object (_error, onStatus)
}

var errAMF = errors.New("malformed AMF0")

func (cmd *command) decode(p []byte) error {
	a := amfReader{b: p, cmd: cmd}
	for i := 0; len(a.b) > 0; i++ {
		marker := a.b[0]
		num, str, err := a.value(0, "")
		if err != nil {
			return err
		}
		switch {
		case i == 0:
			cmd.name = str
		case i == 1:
			cmd.txn = num
		case marker == 0:
			cmd.nums = append(cmd.nums, num)
		}
	}
	return nil
}

type amfReader struct {
	b   []byte
	cmd *command
}

func (a *amfReader) take(n int) ([]byte, error) {
	if n > len(a.b) {
		return nil, errAMF
	}
	p := a.b[:n]
	a.b = a.b[n:]
	return p, nil
}

func (a *amfReader) str(lenBytes int) (string, error) {
	p, err := a.take(lenBytes)
	if err != nil {
		return "", err
	}
	n := int(binary.BigEndian.Uint16(p))
	if lenBytes == 4 {
		n = int(binary.BigEndian.Uint32(p))
	}
	s, err := a.take(n)
	return string(s), err
}

// value consumes one value at the given object depth, and keeps the
// string properties of the top-level object that a command needs.
func (a *amfReader) value(depth int, key string) (num float64, str string, err error) {
	if depth > 8 {
		return 0, "", errAMF
	}
	m, err := a.take(1)
	if err != nil {
		return 0, "", err
	}
	switch m[0] {
	case 0: // number
		p, err := a.take(8)
		if err != nil {
			return 0, "", err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(p)), "", nil
	case 1: // boolean
		_, err = a.take(1)
	case 2, 12: // string, long string
		lenBytes := 2
		if m[0] == 12 {
			lenBytes = 4
		}
		str, err = a.str(lenBytes)
		if err == nil && depth == 1 {
			switch key {
			case "level":
				a.cmd.level = str
			case "code":
				a.cmd.code = str
			case "description":
				a.cmd.description = str
			}
		}
	case 3: // object
		err = a.props(depth + 1)
	case 8: // ECMA array: a count nobody trusts, then properties
		if _, err = a.take(4); err == nil {
			err = a.props(depth + 1)
		}
	case 10: // strict array
		var p []byte
		if p, err = a.take(4); err == nil {
			for n := binary.BigEndian.Uint32(p); n > 0 && err == nil; n-- {
				_, _, err = a.value(depth+1, "")
			}
		}
	case 11: // date
		_, err = a.take(10)
	case 5, 6: // null, undefined
	default:
		err = errAMF
	}
	return 0, str, err
}

func (a *amfReader) props(depth int) error {
	for {
		k, err := a.str(2)
		if err != nil {
			return err
		}
		if k == "" && len(a.b) > 0 && a.b[0] == 9 {
			a.b = a.b[1:]
			return nil
		}
		if _, _, err := a.value(depth, k); err != nil {
			return err
		}
	}
}
