package session

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// Frame headers used by the tests.
var (
	hdrV1Stereo = []byte{0xFF, 0xFB, 0x90, 0x00} // MPEG-1 128 kbps 44.1 kHz stereo: 417 bytes
	hdrV2Mono   = []byte{0xFF, 0xF3, 0x48, 0xC0} // MPEG-2 32 kbps 16 kHz mono: 144 bytes
	hdrV25Mono  = []byte{0xFF, 0xE3, 0x28, 0xC0} // MPEG-2.5 16 kbps 8 kHz mono: 144 bytes
)

// frame builds one layer III frame whose payload bytes are all fill.
func frame(hdr []byte, fill byte) []byte {
	h, ok := parseHeader(hdr)
	if !ok {
		panic("bad test header")
	}
	f := bytes.Repeat([]byte{fill}, h.length)
	copy(f, hdr)
	return f
}

func frames(hdr []byte, n int, fill byte) []byte {
	var b []byte
	for i := 0; i < n; i++ {
		b = append(b, frame(hdr, fill)...)
	}
	return b
}

// infoFrame is a Xing/Info header frame as encoders write at a file start.
func infoFrame(hdr []byte) []byte {
	h, _ := parseHeader(hdr)
	f := frame(hdr, 0)
	copy(f[4+h.sideInfoLen():], "Info")
	return f
}

func id3v2(size int) []byte {
	tag := []byte{'I', 'D', '3', 4, 0, 0, byte(size >> 21 & 0x7F), byte(size >> 14 & 0x7F), byte(size >> 7 & 0x7F), byte(size & 0x7F)}
	return append(tag, bytes.Repeat([]byte{0xFF}, size)...) // 0xFF inside a tag must not look like audio
}

func id3v1() []byte { return append([]byte("TAG"), bytes.Repeat([]byte{0xFF}, 125)...) }

func TestParseHeader(t *testing.T) {
	for _, tc := range []struct {
		hdr     []byte
		version byte
		rate    int
		length  int
		dur     time.Duration
	}{
		{hdrV1Stereo, 1, 44100, 417, 26122448},
		{hdrV2Mono, 2, 16000, 144, 36 * time.Millisecond},
		{hdrV25Mono, 25, 8000, 144, 72 * time.Millisecond},
		{[]byte{0xFF, 0xFB, 0x92, 0x00}, 1, 44100, 418, 26122448}, // padded
	} {
		h, ok := parseHeader(tc.hdr)
		if !ok || h.version != tc.version || h.sampleRate != tc.rate || h.length != tc.length || h.duration() != tc.dur {
			t.Errorf("parseHeader(% x) = %+v %v", tc.hdr, h, ok)
		}
	}
	for _, bad := range [][]byte{
		{0xFF, 0xFB, 0x00, 0x00}, // free format
		{0xFF, 0xFB, 0xF0, 0x00}, // bitrate 15
		{0xFF, 0xFB, 0x9C, 0x00}, // sample rate 3
		{0xFF, 0xEB, 0x90, 0x00}, // version reserved
		{0xFF, 0xFD, 0x90, 0x00}, // layer II
		{0xFF, 0xFB, 0x90, 0x02}, // emphasis reserved
		{0xFF, 0xFB, 0x90},       // short
		{'I', 'D', '3', 4},
	} {
		if _, ok := parseHeader(bad); ok {
			t.Errorf("parseHeader(% x) accepted", bad)
		}
	}
}

// feedAll feeds the pieces and returns everything the scanner passed on,
// flush included.
func feedAll(t *testing.T, s *mp3Scanner, pieces ...[]byte) []byte {
	t.Helper()
	var out []byte
	for _, p := range pieces {
		got, err := s.feed(p)
		if err != nil {
			t.Fatalf("feed: %v", err)
		}
		out = append(out, got...)
	}
	return append(out, s.flush()...)
}

func TestScannerCutsAnywhere(t *testing.T) {
	for _, hdr := range [][]byte{hdrV1Stereo, hdrV2Mono, hdrV25Mono} {
		stream := frames(hdr, 6, 0x55)
		for cut := 1; cut < len(stream); cut += 7 {
			var s mp3Scanner
			got := feedAll(t, &s, stream[:cut], stream[cut:])
			if !bytes.Equal(got, stream) {
				t.Fatalf("cut at %d: got %d bytes, want %d", cut, len(got), len(stream))
			}
			if s.stats.Frames != 6 {
				t.Fatalf("frames = %d", s.stats.Frames)
			}
		}
	}
}

func TestScannerEmitsFramesWithoutWaitingOnceSynced(t *testing.T) {
	var s mp3Scanner
	out, _ := s.feed(frame(hdrV2Mono, 0x55))
	if len(out) != 0 { // a lone first frame waits for a confirming header
		t.Fatalf("first write passed %d bytes", len(out))
	}
	out, _ = s.feed(frame(hdrV2Mono, 0x56))
	if len(out) != 288 {
		t.Fatalf("second write passed %d bytes, want the held frame and the new one", len(out))
	}
	out, _ = s.feed(frame(hdrV2Mono, 0x57))
	if len(out) != 144 {
		t.Fatalf("synced write passed %d bytes, want its frame at once", len(out))
	}
}

func TestScannerStripsPerChunkFileHeaders(t *testing.T) {
	audio := frames(hdrV1Stereo, 5, 0x55)
	chunkFile := func() []byte {
		b := append(id3v2(300), infoFrame(hdrV1Stereo)...)
		b = append(b, audio...)
		return append(b, id3v1()...)
	}
	var s mp3Scanner
	c1, c2, c3 := chunkFile(), chunkFile(), chunkFile()
	got := feedAll(t, &s, c1, c2[:5], c2[5:200], c2[200:], c3)
	want := bytes.Repeat(audio, 3)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d of audio only", len(got), len(want))
	}
	if s.stats.Stripped != 3*int64(310+417+128) {
		t.Errorf("stripped %d", s.stats.Stripped)
	}
	if want := 15 * 26122448 * time.Nanosecond; s.stats.Audio != want {
		t.Errorf("audio %v, want %v", s.stats.Audio, want)
	}
}

func TestScannerSkipsGarbageMidStream(t *testing.T) {
	var s mp3Scanner
	a := frames(hdrV2Mono, 3, 0x55)
	junk := []byte("garbage\xff\xfe junk")
	got := feedAll(t, &s, a, append(append([]byte{}, junk...), a...))
	if !bytes.Equal(got, append(append([]byte{}, a...), a...)) {
		t.Fatalf("got %d bytes", len(got))
	}
	if s.stats.Garbage != int64(len(junk)) {
		t.Errorf("garbage = %d", s.stats.Garbage)
	}
	// A write of nothing but junk is refused, and the stream goes on.
	if _, err := s.feed(junk); !errors.Is(err, ErrNotMP3) {
		t.Errorf("junk write: %v", err)
	}
	if got := feedAll(t, &s, a); !bytes.Equal(got, a) {
		t.Errorf("after junk: %d bytes", len(got))
	}
}

func TestScannerRefusesNonMP3(t *testing.T) {
	for name, data := range map[string][]byte{
		"text":    []byte("hello, this is not audio at all"),
		"big":     bytes.Repeat([]byte{0x12, 0x34}, notMP3Limit),
		"ogg":     append([]byte("OggS"), make([]byte, 200)...),
		"layerII": bytes.Repeat(append([]byte{0xFF, 0xFD, 0x94, 0x00}, bytes.Repeat([]byte{0x55}, 413)...), 4),
	} {
		var s mp3Scanner
		if _, err := s.feed(data); !errors.Is(err, ErrNotMP3) {
			t.Errorf("%s: err = %v, want ErrNotMP3", name, err)
		}
		// The refusal leaves no trace: a good stream afterwards works.
		good := frames(hdrV2Mono, 3, 0x55)
		if got := feedAll(t, &s, good); !bytes.Equal(got, good) {
			t.Errorf("%s: stream after a refusal: %d bytes", name, len(got))
		}
	}
	var s mp3Scanner
	if _, err := s.feed(frame(hdrV1Stereo, 0x55)[:100]); err != nil {
		t.Errorf("a cut first frame was refused: %v", err)
	}
	var tagOnly mp3Scanner
	if _, err := tagOnly.feed(id3v2(50)); err != nil {
		t.Errorf("a tag alone was refused: %v", err)
	}
}

func FuzzScanner(f *testing.F) {
	f.Add(frames(hdrV1Stereo, 3, 0x55), uint16(100))
	f.Add(append(id3v2(20), frames(hdrV25Mono, 3, 0)...), uint16(7))
	f.Add(append(infoFrame(hdrV2Mono), id3v1()...), uint16(1))
	f.Add([]byte("ID3\x04\x00\x10\x00\x00\x00\x01\x00"), uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		var s mp3Scanner
		c := int(cut) % (len(data) + 1)
		var out []byte
		for _, p := range [][]byte{data[:c], data[c:]} {
			got, err := s.feed(p)
			if err != nil {
				continue
			}
			out = append(out, got...)
			if len(s.carry) > maxFrameLen+10 {
				t.Fatalf("carry grew to %d", len(s.carry))
			}
		}
		out = append(out, s.flush()...)
		// Whatever passes is a sequence of whole layer III frames.
		for len(out) > 0 {
			h, ok := parseHeader(out)
			if !ok || h.length > len(out) {
				t.Fatalf("output is not whole frames at % x", out[:min(4, len(out))])
			}
			out = out[h.length:]
		}
	})
}
