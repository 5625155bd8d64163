package rtmpplay

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"ffmpeg-publisher/internal/rtmptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder keeps what Play reported; fn runs on Play's goroutine while the
// test polls.
type recorder struct {
	mu   sync.Mutex
	msgs []Message
}

func (r *recorder) add(m Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

func (r *recorder) get() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// waitFor polls cond until it holds or d has passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// audio leaves out the data messages (onMetaData, |RtmpSampleAccess).
func audio(msgs []Message) []Message {
	var a []Message
	for _, m := range msgs {
		if m.Type == typeAudio {
			a = append(a, m)
		}
	}
	return a
}

func publish(t *testing.T, url string, mp3 []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
		"-f", "mp3", "-i", "pipe:0", "-c:a", "aac", "-f", "flv", url)
	cmd.Stdin = bytes.NewReader(mp3)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg publish: %v\n%s", err, stderr.String())
	}
}

// TestPlayNginx subscribes before anything is published, then follows a
// 3 s publish and a 1 s republish of the same stream on one connection.
func TestPlayNginx(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "nginx")
	s := rtmptest.Start(t)
	const seconds = 3.0
	mp3 := rtmptest.MP3(t, seconds, 44100, 2, "128k", false)
	mp3short := rtmptest.MP3(t, 1, 44100, 2, "128k", false)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rec recorder
	done := make(chan error, 1)
	go func() { done <- Play(ctx, s.URL+"/x", rec.add) }()
	waitFor(t, 5*time.Second, "nginx to see the player", func() bool {
		return strings.Contains(s.ErrorLog(), "play: name='x'")
	})

	publish(t, s.URL+"/x", mp3)
	waitFor(t, 3*time.Second, "the last audio of the first publish", func() bool {
		a := audio(rec.get())
		return len(a) > 0 && a[len(a)-1].TS >= time.Duration((seconds-0.3)*float64(time.Second))
	})
	first := audio(rec.get())

	publish(t, s.URL+"/x", mp3short)
	waitFor(t, 3*time.Second, "audio of the republish", func() bool {
		return len(audio(rec.get())) > len(first)+30 // 1 s of AAC is 43 frames
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Play after cancel: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Play did not return after cancel")
	}

	if first[0].First>>4 != 10 || first[0].Second != 0 {
		t.Errorf("first audio message has flags %#x %#x, want AAC (codec 10) sequence header", first[0].First, first[0].Second)
	}
	if len(first) > 1 && first[1].Second != 1 {
		t.Errorf("second audio message has AAC packet type %d, want 1 (raw)", first[1].Second)
	}
	for i := 1; i < len(first); i++ {
		if first[i].TS < first[i-1].TS {
			t.Fatalf("TS went back: message %d at %v after %v", i, first[i].TS, first[i-1].TS)
		}
		if first[i].Arrived.Before(first[i-1].Arrived) {
			t.Fatalf("arrival went back at message %d", i)
		}
	}
	last := first[len(first)-1]
	if d := last.TS.Seconds() - seconds; math.Abs(d) > 0.3 {
		t.Errorf("last TS %v, want %vs ± 0.3 s", last.TS, seconds)
	}
	// -re paces the publisher: the messages must trickle in, not come
	// in one burst.
	if spread := last.Arrived.Sub(first[1].Arrived).Seconds(); spread < 0.7*seconds || spread > seconds+1 {
		t.Errorf("first publish arrived over %.2f s, want about %v s", spread, seconds)
	}
	for i, m := range first {
		if m.Size <= 0 {
			t.Fatalf("message %d has size %d", i, m.Size)
		}
	}
	all := audio(rec.get())
	second := all[len(first):]
	if second[0].First>>4 != 10 || second[0].Second != 0 {
		t.Errorf("republish starts with flags %#x size %d, want the AAC sequence header", second[0].First, second[0].Size)
	}
	t.Logf("first publish: %d audio messages, TS %v..%v, arrived over %v; republish: %d messages, TS %v..%v",
		len(first), first[0].TS, last.TS, last.Arrived.Sub(first[0].Arrived).Round(time.Millisecond),
		len(second), second[0].TS, second[len(second)-1].TS)
}

func TestPlayCancel(t *testing.T) {
	t.Run("waiting for a publisher", func(t *testing.T) {
		rtmptest.Require(t, "nginx")
		s := rtmptest.Start(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Play(ctx, s.URL+"/nobody", nil) }()
		waitFor(t, 5*time.Second, "nginx to see the player", func() bool {
			return strings.Contains(s.ErrorLog(), "play: name='nobody'")
		})
		cancelled := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Play after cancel: %v", err)
			}
			t.Logf("returned %v after cancel", time.Since(cancelled))
		case <-time.After(time.Second):
			t.Fatal("Play did not return within 1 s of cancel")
		}
	})
	t.Run("server silent in handshake", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				accepted <- c
			}
			close(accepted)
		}()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Play(ctx, "rtmp://"+ln.Addr().String()+"/live/x", nil) }()
		c := <-accepted
		if c == nil {
			t.Fatal("no connection")
		}
		defer c.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Play after cancel: %v", err)
			}
		case <-time.After(time.Second):
			t.Fatal("Play did not return within 1 s of cancel")
		}
	})
}

func TestPlayErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()

	closing, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer closing.Close()
	go func() {
		for {
			c, err := closing.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	for _, url := range []string{
		"http://127.0.0.1/live/x",
		"rtmp://127.0.0.1/live",
		"rtmp:///live/x",
		"rtmp://[::1/live/x",
		"rtmp://" + refused + "/live/x",
		"rtmp://" + closing.Addr().String() + "/live/x",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		err := Play(ctx, url, nil)
		cancel()
		if err == nil {
			t.Errorf("Play(%q) = nil, want an error", url)
		} else if time.Since(start) > 2*time.Second {
			t.Errorf("Play(%q) took %v", url, time.Since(start))
		} else {
			t.Logf("Play(%q): %v", url, err)
		}
	}
}

// The fake server below speaks the chunk stream by hand, so that the
// header formats, extended timestamps, chunk sizes, aborts and control
// messages that nginx rarely or never sends are covered.

type chunker struct {
	size int // current outgoing chunk size
	buf  bytes.Buffer
}

func (w *chunker) basic(fmtType byte, csid uint32) {
	switch {
	case csid < 64:
		w.buf.WriteByte(fmtType<<6 | byte(csid))
	case csid < 320:
		w.buf.Write([]byte{fmtType << 6, byte(csid - 64)})
	default:
		w.buf.Write([]byte{fmtType<<6 | 1, byte(csid - 64), byte((csid - 64) >> 8)})
	}
}

// msg writes a message whose first chunk has a fmtType header carrying
// ts (absolute for fmt 0, a delta for 1 and 2, ignored for 3), and
// continuation chunks as fmt 3. ext tells whether fmt 3 chunks carry an
// extended timestamp, as they must after a header that had one.
func (w *chunker) msg(fmtType byte, csid uint32, ts uint32, typ byte, payload []byte, ext bool, extVal uint32) {
	w.basic(fmtType, csid)
	field := min(ts, 0xffffff)
	be3 := func(v uint32) { w.buf.Write([]byte{byte(v >> 16), byte(v >> 8), byte(v)}) }
	if fmtType <= 2 {
		be3(field)
	}
	if fmtType <= 1 {
		be3(uint32(len(payload)))
		w.buf.WriteByte(typ)
	}
	if fmtType == 0 {
		binary.Write(&w.buf, binary.LittleEndian, uint32(1))
	}
	if fmtType <= 2 && field == 0xffffff {
		ext, extVal = true, ts
	}
	writeExt := func() {
		if ext {
			binary.Write(&w.buf, binary.BigEndian, extVal)
		}
	}
	writeExt()
	for i := 0; ; {
		n := min(len(payload)-i, w.size)
		w.buf.Write(payload[i : i+n])
		if i += n; i >= len(payload) {
			return
		}
		w.basic(3, csid)
		writeExt()
	}
}

func (w *chunker) control(typ byte, body ...byte) { w.msg(0, 2, 0, typ, body, false, 0) }

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func payload(first byte, n int) []byte {
	p := bytes.Repeat([]byte{0x55}, n)
	if n > 0 {
		p[0] = first
	}
	return p
}

type received struct {
	typ  byte
	body []byte
}

// fakeServer accepts one player, answers its connect and createStream,
// and then sends script; what the player sends arrives on the channel.
func fakeServer(t *testing.T, script func(w *chunker) []byte) (url string, got <-chan received) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan received, 100)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		hs := make([]byte, 1537)
		if _, err := io.ReadFull(c, hs); err != nil {
			t.Error(err)
			return
		}
		c.Write(append([]byte{3}, make([]byte, 2*1536)...))
		if _, err := io.ReadFull(c, hs[1:]); err != nil {
			t.Error(err)
			return
		}
		// The player's own reader parses what the player sends.
		r := newConn(c, io.Discard, nil)
		next := func() received {
			for {
				cs, err := r.readChunk()
				if err != nil {
					return received{}
				}
				if cs != nil {
					m := received{cs.typ, append([]byte(nil), cs.buf...)}
					if cs.typ == typeSetChunkSize {
						r.chunkSize = binary.BigEndian.Uint32(cs.buf)
					}
					return m
				}
			}
		}
		w := &chunker{size: 128}
		result := func(txn float64, arg []byte) {
			b := amfString(nil, "_result")
			b = amfNumber(b, txn)
			w.msg(0, 3, 0, typeCommand, append(append(b, 5), arg...), false, 0)
			c.Write(w.buf.Bytes())
			w.buf.Reset()
		}
		for m := next(); m.typ != 0; m = next() {
			ch <- m
			if m.typ != typeCommand {
				continue
			}
			var cmd command
			if err := cmd.decode(m.body); err != nil {
				t.Error(err)
				return
			}
			switch cmd.name {
			case "connect":
				result(txnConnect, nil)
			case "createStream":
				result(txnCreateStream, amfNumber(nil, 1))
			case "play":
				// Keep reading what the player sends (acks, pongs)
				// while the script goes out, then close our side only:
				// closing with its acks unread would reset the
				// connection and lose the script's tail.
				drained := make(chan struct{})
				go func() {
					defer close(drained)
					for m := next(); m.typ != 0; m = next() {
						ch <- m
					}
				}()
				if _, err := c.Write(script(w)); err != nil {
					t.Error(err)
				}
				c.(*net.TCPConn).CloseWrite()
				<-drained
				return
			}
		}
	}()
	return "rtmp://" + ln.Addr().String() + "/live/x", ch
}

type want struct {
	typ   byte
	ms    uint32
	size  int
	first byte
}

// chunkScript covers the header formats, extended timestamps and chunk
// stream ids, chunk sizes, aborts and control messages that nginx rarely
// or never sends; it returns what the player should report.
func chunkScript(w *chunker) []want {
	var wants []want
	w.control(typeWindowAckSize, u32(1000)...)
	w.control(typeSetPeerBandwidth, append(u32(5000), 2)...)
	// fmt 0, then fmt 2 and a fmt 3 that starts a message: deltas
	// accumulate; 300 bytes span three 128-byte chunks.
	w.msg(0, 4, 1000, typeAudio, payload(0xaf, 300), false, 0)
	w.msg(2, 4, 23, typeAudio, payload(0xaf, 300), false, 0)
	w.msg(3, 4, 0, typeAudio, payload(0xae, 300), false, 0)
	w.msg(1, 4, 24, typeAudio, payload(0xad, 10), false, 0)
	wants = append(wants, want{8, 1000, 300, 0xaf}, want{8, 1023, 300, 0xaf}, want{8, 1046, 300, 0xae}, want{8, 1070, 10, 0xad})
	// Interleaved chunk streams: a video message's first chunk,
	// a whole audio message, then the video's last chunk.
	var v chunker
	v.size = 128
	v.msg(0, 6, 1070, typeVideo, payload(0x17, 200), false, 0)
	vb := v.buf.Bytes()
	w.buf.Write(vb[:12+128])
	w.msg(3, 4, 0, typeAudio, payload(0xac, 10), false, 0)
	w.buf.Write(vb[12+128:])
	wants = append(wants, want{8, 1094, 10, 0xac}, want{9, 1070, 200, 0x17})
	// Abort: a half-sent message is dropped, the next one counts.
	var a chunker
	a.size = 128
	a.msg(0, 5, 3, typeAudio, payload(0xff, 300), false, 0)
	w.buf.Write(a.buf.Bytes()[:12+128])
	w.control(typeAbort, u32(5)...)
	w.msg(0, 5, 7, typeAudio, payload(0xab, 5), false, 0)
	wants = append(wants, want{8, 7, 5, 0xab})
	w.control(typeUserControl, 0, 6, 1, 2, 3, 4) // ping
	w.control(typeUserControl, 0, 1, 0, 0, 0, 1) // stream EOF: keep going
	// Larger chunks from now on.
	w.control(typeSetChunkSize, u32(4096)...)
	w.size = 4096
	w.msg(1, 4, 0, typeAudio, payload(0xaa, 1000), false, 0)
	wants = append(wants, want{8, 1094, 1000, 0xaa})
	// Extended timestamps: absolute in fmt 0, repeated in fmt 3.
	const big = 0x01000000
	w.msg(0, 7, big, typeAudio, payload(0xa9, 5000), false, 0)
	w.msg(3, 7, 0, typeAudio, payload(0xa8, 5000), true, big)
	w.msg(1, 7, 0xffffff+10, typeAudio, payload(0xa7, 4100), false, 0)
	w.msg(3, 7, 0, typeAudio, payload(0xa6, 4100), true, 0xffffff+10)
	wants = append(wants, want{8, big, 5000, 0xa9}, want{8, big, 5000, 0xa8},
		want{8, big + 0xffffff + 10, 4100, 0xa7}, want{8, big + 2*(0xffffff+10), 4100, 0xa6})
	// Extended chunk stream ids, and a data message.
	w.msg(0, 300, 5, typeData, payload(0x02, 40), false, 0)
	w.msg(0, 1000, 6, typeAudio, payload(0xa5, 40), false, 0)
	wants = append(wants, want{18, 5, 40, 0x02}, want{8, 6, 40, 0xa5})
	// Unpublish is status, not an end.
	info := func(level, code string) []byte {
		b := amfString(nil, "onStatus")
		b = amfNumber(b, 0)
		b = append(b, 5, 3)
		b = amfString(amfKey(b, "level"), level)
		b = amfString(amfKey(b, "code"), code)
		b = amfString(amfKey(b, "description"), "x")
		return append(b, 0, 0, 9)
	}
	w.msg(0, 5, 0, typeCommand, info("status", "NetStream.Play.UnpublishNotify"), false, 0)
	w.msg(0, 4, 9, typeAudio, payload(0xa4, 0), false, 0)
	wants = append(wants, want{8, 9, 0, 0})
	return wants
}

func TestChunkStream(t *testing.T) {
	var wants []want
	var total int
	url, got := fakeServer(t, func(w *chunker) []byte {
		wants = chunkScript(w)
		total = w.buf.Len()
		return w.buf.Bytes()
	})

	var rec recorder
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Play(ctx, url, rec.add); err != nil {
		t.Fatalf("Play: %v", err) // the server's close is a clean end
	}
	msgs := rec.get()
	if len(msgs) != len(wants) {
		t.Fatalf("got %d messages, want %d: %+v", len(msgs), len(wants), msgs)
	}
	for i, m := range msgs {
		w := wants[i]
		if m.Type != w.typ || m.TS != time.Duration(w.ms)*time.Millisecond || m.Size != w.size || m.First != w.first {
			t.Errorf("message %d: got type %d TS %v size %d first %#x, want type %d TS %vms size %d first %#x",
				i, m.Type, m.TS, m.Size, m.First, w.typ, w.ms, w.size, w.first)
		}
		if m.Arrived.IsZero() {
			t.Errorf("message %d has no arrival time", i)
		}
	}

	var sent []received
	for m := range got {
		sent = append(sent, m)
	}
	var acks []uint32
	var pong, window, play bool
	for _, m := range sent {
		switch m.typ {
		case typeAck:
			acks = append(acks, binary.BigEndian.Uint32(m.body))
		case typeUserControl:
			pong = pong || bytes.Equal(m.body, []byte{0, 7, 1, 2, 3, 4})
		case typeWindowAckSize:
			window = window || binary.BigEndian.Uint32(m.body) == 5000
		case typeCommand:
			var cmd command
			cmd.decode(m.body)
			play = play || cmd.name == "play"
		}
	}
	if !play {
		t.Error("player sent no play command")
	}
	if !pong {
		t.Error("no ping response")
	}
	if !window {
		t.Error("no window acknowledgement size in answer to set peer bandwidth")
	}
	t.Logf("acks %v, script %d bytes", acks, total)
	// An acknowledgement each time another 1000 bytes were read (one
	// chunk may cover several windows), up to the end.
	if len(acks) < 5 || acks[len(acks)-1] < uint32(total-1000-4100) {
		t.Errorf("acknowledgements %v for a %d-byte script, want them 1000 bytes apart up to the end", acks, total)
	}
	for i := 1; i < len(acks); i++ {
		if acks[i]-acks[i-1] < 1000 {
			t.Errorf("acknowledgements %d and %d only %d bytes apart", acks[i-1], acks[i], acks[i]-acks[i-1])
		}
	}
}

func TestOnStatusError(t *testing.T) {
	url, got := fakeServer(t, func(w *chunker) []byte {
		b := amfString(nil, "onStatus")
		b = amfNumber(b, 0)
		b = append(b, 5, 3)
		b = amfString(amfKey(b, "level"), "error")
		b = amfString(amfKey(b, "code"), "NetStream.Play.StreamNotFound")
		b = amfString(amfKey(b, "description"), "no such stream")
		b = append(b, 0, 0, 9)
		w.msg(0, 5, 0, typeCommand, b, false, 0)
		return w.buf.Bytes()
	})
	go func() {
		for range got {
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := Play(ctx, url, nil)
	if err == nil || !strings.Contains(err.Error(), "StreamNotFound") {
		t.Fatalf("Play = %v, want the StreamNotFound error", err)
	}
}

// loop replays a byte stream forever.
type loop struct {
	b   []byte
	off int
}

func (l *loop) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

// BenchmarkReadAudio measures the per-message cost of a subscriber: AAC
// frames as nginx-rtmp sends them (fmt 1 headers, 4096-byte chunks).
func BenchmarkReadAudio(b *testing.B) {
	w := &chunker{size: 4096}
	w.msg(0, 4, 0, typeAudio, payload(0xaf, 371), false, 0)
	start := w.buf.Len()
	for i := 0; i < 1000; i++ {
		w.msg(1, 4, 23, typeAudio, payload(0xaf, 360+i%30), false, 0)
	}
	var n int
	c := newConn(&loop{b: w.buf.Bytes()[start:]}, io.Discard, func(Message) { n++ })
	c.window, c.chunkSize = 2500000, 4096
	c.streams[4] = &chunkStream{}
	b.ReportAllocs()
	b.ResetTimer()
	for n < b.N {
		cs, err := c.readChunk()
		if err != nil {
			b.Fatal(err)
		}
		if cs != nil {
			if err := c.handle(cs); err != nil {
				b.Fatal(err)
			}
		}
	}
}
