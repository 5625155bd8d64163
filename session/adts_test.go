package session

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// adtsFrame builds one ADTS frame of n bytes (header included) whose payload
// bytes are all fill.
func adtsFrame(c adtsConfig, crc bool, n int, fill byte) []byte {
	f := bytes.Repeat([]byte{fill}, n)
	f[0], f[1] = 0xFF, 0xF1
	if crc {
		f[1] = 0xF0
	}
	f[2] = c.profile<<6 | c.rateIdx<<2 | c.channels>>2
	f[3] = (c.channels&3)<<6 | byte(n>>11)&3
	f[4] = byte(n >> 3)
	f[5] = byte(n&7)<<5 | 0x1F
	f[6] = 0xFC
	return f
}

func adtsFrames(c adtsConfig, k, n int, fill byte) []byte {
	var b []byte
	for range k {
		b = append(b, adtsFrame(c, false, n, fill)...)
	}
	return b
}

var (
	lc44Stereo = adtsConfig{profile: 1, rateIdx: 4, channels: 2}
	lc16Mono   = adtsConfig{profile: 1, rateIdx: 8, channels: 1}
)

func TestParseADTS(t *testing.T) {
	for _, tc := range []struct {
		c    adtsConfig
		crc  bool
		rate int
		hdr  int
		dur  time.Duration
	}{
		{lc44Stereo, false, 44100, 7, 23219954},
		{lc16Mono, true, 16000, 9, 64 * time.Millisecond},
		{adtsConfig{profile: 0, rateIdx: 11, channels: 6}, false, 8000, 7, 128 * time.Millisecond},
	} {
		f := adtsFrame(tc.c, tc.crc, 300, 0x11)
		h, ok := parseADTS(f)
		if !ok || h.adtsConfig != tc.c || h.crc != tc.crc || h.length != 300 || h.rate() != tc.rate ||
			h.headerLen() != tc.hdr || h.duration() != tc.dur {
			t.Errorf("%+v: parsed %+v %v", tc, h, ok)
		}
	}
	bad := map[string]func([]byte){
		"layer not 0":         func(f []byte) { f[1] |= 2 },
		"rate index 13":       func(f []byte) { f[2] = f[2]&^0x3C | 13<<2 },
		"channel config 0":    func(f []byte) { f[2] &^= 1; f[3] &= 0x3F },
		"two raw data blocks": func(f []byte) { f[6] |= 1 },
		"shorter than header": func(f []byte) { f[3] &^= 3; f[4] = 0; f[5] = 6 << 5 },
	}
	for name, spoil := range bad {
		f := adtsFrame(lc44Stereo, false, 300, 0)
		spoil(f)
		if _, ok := parseADTS(f); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestADTSASC(t *testing.T) {
	// AAC LC (2), 44.1 kHz (4), stereo: 0x12 0x10, as every encoder writes it.
	if got := lc44Stereo.asc(); !bytes.Equal(got, []byte{0x12, 0x10}) {
		t.Errorf("asc = %x", got)
	}
	if got := lc16Mono.asc(); !bytes.Equal(got, []byte{0x14, 0x08}) {
		t.Errorf("asc = %x", got)
	}
}

func TestADTSScannerCutsAndResyncs(t *testing.T) {
	stream := adtsFrames(lc44Stereo, 10, 200, 0x22)
	// Junk between two frames (a client's chunk boundary), starting like a header.
	junk := append([]byte{0xFF, 0xF1, 0x00}, bytes.Repeat([]byte{0xAB}, 50)...)
	in := append(append(append([]byte(nil), stream[:1000]...), junk...), stream[1000:]...)
	for _, step := range []int{1, 3, 7, 199, 201, 5000} {
		var s adtsScanner
		var got []byte
		for i := 0; i < len(in); i += step {
			out, err := s.feed(in[i:min(i+step, len(in))])
			if err != nil && !errors.Is(err, ErrNotAAC) {
				t.Fatal(err)
			}
			got = append(got, out...)
		}
		got = append(got, s.flush()...)
		if !bytes.Equal(got, stream) {
			t.Errorf("step %d: got %d bytes, want %d", step, len(got), len(stream))
		}
	}
}

func TestADTSScannerRefusesJunk(t *testing.T) {
	var a aacUnits
	a.mark()
	if _, err := a.feed(bytes.Repeat([]byte("not aac "), 100)); !errors.Is(err, ErrNotAAC) {
		t.Fatalf("junk: %v", err)
	}
	a.rollback()
	units, err := a.feed(adtsFrames(lc16Mono, 3, 100, 1))
	if err != nil || len(units) != 3 {
		t.Fatalf("after a refused write: %d units, %v", len(units), err)
	}
	var b aacUnits
	if units, _ := b.feed(adtsFrame(lc16Mono, false, 100, 1)); len(units) != 0 {
		t.Fatal("a first frame passed before a second confirmed it")
	}
	if f := b.flush(); len(f) != 1 {
		t.Fatalf("flush: %d units", len(f))
	}
	a.mark()
	if _, err := a.feed([]byte("more junk, all of it")); !errors.Is(err, ErrNotAAC) {
		t.Fatalf("junk mid-stream: %v", err)
	}
}

func TestAACUnitsNewSegmentOnConfigChange(t *testing.T) {
	var a aacUnits
	in := append(adtsFrames(lc16Mono, 3, 100, 1), adtsFrames(lc44Stereo, 3, 150, 2)...)
	units, err := a.feed(in)
	if err != nil {
		t.Fatal(err)
	}
	units = append(units, a.flush()...)
	if len(units) != 6 {
		t.Fatalf("%d units", len(units))
	}
	for i, u := range units {
		if u.newSeg != (i == 3) {
			t.Errorf("unit %d: newSeg %v", i, u.newSeg)
		}
		want := lc16Mono.duration()
		if i >= 3 {
			want = lc44Stereo.duration()
		}
		if u.dur != want {
			t.Errorf("unit %d: %s", i, u.dur)
		}
	}
}

func TestAACFramerTags(t *testing.T) {
	in := adtsFrames(lc16Mono, 3, 100, 7)
	var f aacFramer
	out := f.frame(nil, []unit{{data: in}}, true)
	if !bytes.HasPrefix(out, flvHeader) {
		t.Fatal("no FLV header")
	}
	out = out[len(flvHeader):]
	var times []int
	for i := 0; len(out) > 0; i++ {
		size := int(out[1])<<16 | int(out[2])<<8 | int(out[3])
		ts := int(out[7])<<24 | int(out[4])<<16 | int(out[5])<<8 | int(out[6])
		body := out[11 : 11+size]
		if body[0] != 0xAF || body[1] != byte(min(i, 1)) {
			t.Fatalf("tag %d: flags %x %x", i, body[0], body[1])
		}
		if i == 0 && !bytes.Equal(body[2:], lc16Mono.asc()) {
			t.Errorf("sequence header %x", body[2:])
		}
		if i > 0 {
			if len(body[2:]) != 93 || body[2] != 7 {
				t.Errorf("tag %d: %d bytes of payload", i, len(body[2:]))
			}
			times = append(times, ts)
		}
		out = out[11+size+4:]
	}
	if len(times) != 3 || times[0] != 0 || times[1] != 64 || times[2] != 128 {
		t.Errorf("timestamps %v", times)
	}
	// A later write continues the clock.
	more := f.frame(nil, []unit{{data: adtsFrames(lc16Mono, 1, 100, 7)}}, false)
	if ts := int(more[4])<<16 | int(more[5])<<8 | int(more[6]); ts != 192 {
		t.Errorf("next timestamp %d", ts)
	}
}

func TestAACPreroll(t *testing.T) {
	var l streamLog
	l.preroll = aacPreroll
	for range 4 {
		l.append(unit{data: []byte{1}, dur: time.Millisecond})
	}
	l.confirm(2)
	if got := l.resumeAt(); got != 1 {
		t.Errorf("resumeAt = %d, want the frame before the first unconfirmed", got)
	}
}

// FuzzADTSScanner: cutting a stream anywhere never changes the frames it
// gives, the carry stays bounded, and every frame is whole. Its seeds are
// in testdata/fuzz/FuzzADTSScanner.
func FuzzADTSScanner(f *testing.F) {
	f.Add(adtsFrames(lc44Stereo, 4, 60, 0xFF), uint64(1))
	f.Add(append([]byte{0, 0xFF, 0xF1}, adtsFrames(lc16Mono, 3, 9, 0)...), uint64(2))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		var whole adtsScanner
		want, err := whole.feed(data)
		if err != nil {
			want = nil
		}
		want = append(bytes.Clone(want), whole.flush()...)
		var s adtsScanner
		var got []byte
		for _, p := range cutRandomly(rand.New(rand.NewPCG(seed, 0)), data, 3) {
			out, err := s.feed(p)
			if err != nil {
				if !errors.Is(err, ErrNotAAC) {
					t.Fatal(err)
				}
				return // the session refuses that write: another stream from here
			}
			got = append(got, out...)
			if len(s.carry) > maxADTSFrame+adtsHeaderLen {
				t.Fatalf("carried %d bytes", len(s.carry))
			}
		}
		got = append(got, s.flush()...)
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("cut feeding gave other frames")
		}
		for len(got) > 0 {
			h, ok := parseADTS(got)
			if !ok || h.length > len(got) {
				t.Fatalf("not a whole frame")
			}
			got = got[h.length:]
		}
	})
}
