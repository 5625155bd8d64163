package session

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Hand-built WebM: elements of known size (el), headers of unknown size
// (open), and the pieces a MediaRecorder stream is made of.

func idBytes(id uint32) []byte {
	switch {
	case id >= 1<<24:
		return []byte{byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	case id >= 1<<16:
		return []byte{byte(id >> 16), byte(id >> 8), byte(id)}
	case id >= 1<<8:
		return []byte{byte(id >> 8), byte(id)}
	}
	return []byte{byte(id)}
}

func sizeBytes(n int) []byte {
	for l := 1; l <= 8; l++ {
		if n < 1<<(7*l)-1 {
			b := make([]byte, l)
			for i := l - 1; i >= 0; i-- {
				b[i] = byte(n)
				n >>= 8
			}
			b[0] |= 0x80 >> (l - 1)
			return b
		}
	}
	panic("too large")
}

func el(id uint32, payload ...[]byte) []byte {
	p := bytes.Join(payload, nil)
	return slices.Concat(idBytes(id), sizeBytes(len(p)), p)
}

func uintEl(id uint32, v uint64) []byte {
	return el(id, bytes.TrimLeft([]byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}, "\x00"))
}

func open(id uint32) []byte { return append(idBytes(id), unknownSize...) }

func ebmlHeader() []byte { return el(idEBML, uintEl(0x4286, 1), el(idDocType, []byte("webm"))) }

func tracksEl(codec string, extra ...[]byte) []byte {
	return el(idTracks, el(idTrackEntry, append([][]byte{uintEl(idTrackNumber, 1), uintEl(idTrackType, 2), el(idCodecID, []byte(codec))}, extra...)...))
}

// opusPacket is a packet whose TOC says config and code (RFC 6716 §3.1).
func opusPacket(config, code byte, n int) []byte {
	if code == 3 {
		return []byte{config<<3 | 3, byte(n), 0xAA, 0xBB}
	}
	return []byte{config<<3 | code, 0xAA, 0xBB}
}

func simpleBlock(track byte, tc int16, pkt []byte) []byte {
	return el(idSimpleBlock, []byte{0x80 | track, byte(tc >> 8), byte(tc), 0x80}, pkt)
}

// mediaRecorderLike is a stream shaped like Chromium's: a Segment and two
// Clusters of unknown size, 20 ms Opus packets; plus a dropped SeekHead
// and Void. It returns the stream, its init data, and its units' data.
func mediaRecorderLike() (stream, init []byte, units [][]byte) {
	info := el(idInfo, uintEl(idTimecodeScale, 1000000))
	tracks := tracksEl("A_OPUS")
	init = slices.Concat(ebmlHeader(), open(idSegment), info, tracks)
	stream = slices.Concat(ebmlHeader(), open(idSegment), el(idSeekHead, []byte{1, 2, 3}), el(0xEC, make([]byte, 20)), info, tracks)
	for c := range 2 {
		head := slices.Concat(open(idCluster), uintEl(idTimecode, uint64(c*1000)))
		stream = append(stream, head...)
		for i := range 3 {
			b := simpleBlock(1, int16(i*20), opusPacket(31, 0, 1))
			stream = append(stream, b...)
			if i == 0 {
				b = slices.Concat(head, b)
			}
			units = append(units, b)
		}
	}
	return stream, init, units
}

func feedWebM(t testing.TB, s *webmScanner, pieces ...[]byte) []webmUnit {
	t.Helper()
	var out []webmUnit
	for _, p := range pieces {
		u, err := s.feed(p)
		if err != nil {
			t.Fatalf("feed: %v", err)
		}
		out = append(out, u...)
	}
	return out
}

// cutRandomly splits b at n random places.
func cutRandomly(r *rand.Rand, b []byte, n int) [][]byte {
	cuts := []int{0, len(b)}
	for range n {
		cuts = append(cuts, r.IntN(len(b)+1))
	}
	slices.Sort(cuts)
	var pieces [][]byte
	for i := 1; i < len(cuts); i++ {
		pieces = append(pieces, b[cuts[i-1]:cuts[i]])
	}
	return pieces
}

func TestWebMScannerSplitsInitAndBlocks(t *testing.T) {
	stream, init, want := mediaRecorderLike()
	resume := slices.Concat(open(idCluster), uintEl(idTimecode, 1000))
	for cut := range len(stream) + 1 {
		var s webmScanner
		units := feedWebM(t, &s, stream[:cut], stream[cut:])
		if len(units) != len(want) {
			t.Fatalf("cut at %d: %d units, want %d", cut, len(units), len(want))
		}
		for i, u := range units {
			if !bytes.Equal(u.data, want[i]) || u.dur != 20*time.Millisecond {
				t.Fatalf("cut at %d: unit %d is % x (%v), want % x (20ms)", cut, i, u.data, u.dur, want[i])
			}
			if (i == 0) != (u.init != nil) || i == 0 && !bytes.Equal(u.init, init) {
				t.Fatalf("cut at %d: unit %d init % x", cut, i, u.init)
			}
			if wantResume := i%3 != 0; wantResume != (u.resume != nil) || i == 4 && !bytes.Equal(u.resume, resume) {
				t.Fatalf("cut at %d: unit %d resume % x", cut, i, u.resume)
			}
		}
	}
	// Byte by byte, too, and the units outlive the next feeds.
	var s webmScanner
	var units []webmUnit
	for _, c := range stream {
		units = append(units, feedWebM(t, &s, []byte{c})...)
	}
	var got [][]byte
	for _, u := range units {
		got = append(got, u.data)
	}
	if !slices.EqualFunc(got, want, bytes.Equal) {
		t.Fatal("byte-by-byte feeding gave other units")
	}
}

// A file written by a seekable muxer: sizes known, children to drop inside
// clusters (which then must be reopened with unknown size), Cues at the end.
func TestWebMScannerKnownSizesAndDroppedElements(t *testing.T) {
	tracks := tracksEl("A_OPUS")
	b1 := simpleBlock(1, 0, opusPacket(31, 3, 3))                                                           // 3 × 20 ms
	b2 := el(idBlockGroup, el(idBlock, []byte{0x81, 0, 60, 0}, opusPacket(15, 1, 0)), uintEl(0x75A2, 1000)) // 2 × 20 ms, DiscardPadding
	b3 := simpleBlock(1, 0, opusPacket(16, 0, 0))                                                           // 2.5 ms
	cluster1 := el(idCluster, uintEl(idTimecode, 0), el(0xEC, make([]byte, 5)), b1, el(0xBF, []byte{1, 2, 3, 4}), b2)
	cluster2 := el(idCluster, uintEl(0xA7, 99), uintEl(idTimecode, 100), b3)
	segment := el(idSegment, el(idSeekHead, make([]byte, 30)), el(idInfo, uintEl(idTimecodeScale, 1000000)), tracks, el(idTags, make([]byte, 50)), cluster1, cluster2, el(idCues, make([]byte, 40)))
	var s webmScanner
	units := feedWebM(t, &s, slices.Concat(ebmlHeader(), segment, ebmlHeader(), open(idSegment), tracks, open(idCluster), b3))
	head := func(tc uint64) []byte { return slices.Concat(open(idCluster), uintEl(idTimecode, tc)) }
	want := []struct {
		data, resume []byte
		dur          time.Duration
	}{
		{slices.Concat(head(0), b1), nil, 60 * time.Millisecond},
		{b2, head(0), 40 * time.Millisecond},
		{slices.Concat(head(100), b3), nil, 2500 * time.Microsecond},
		{slices.Concat(open(idCluster), b3), nil, 2500 * time.Microsecond},
	}
	if len(units) != len(want) {
		t.Fatalf("%d units, want %d", len(units), len(want))
	}
	for i, w := range want {
		u := units[i]
		if !bytes.Equal(u.data, w.data) || !bytes.Equal(u.resume, w.resume) || u.dur != w.dur {
			t.Errorf("unit %d: data % x resume % x dur %v;\nwant data % x resume % x dur %v", i, u.data, u.resume, u.dur, w.data, w.resume, w.dur)
		}
	}
	// Each segment's first unit carries its own init, Segment size unknown.
	if want := slices.Concat(ebmlHeader(), open(idSegment), el(idInfo, uintEl(idTimecodeScale, 1000000)), tracks); !bytes.Equal(units[0].init, want) {
		t.Errorf("init % x, want % x", units[0].init, want)
	}
	if want := slices.Concat(ebmlHeader(), open(idSegment), tracks); !bytes.Equal(units[3].init, want) {
		t.Errorf("second segment's init % x, want % x", units[3].init, want)
	}
	if units[1].init != nil || units[2].init != nil {
		t.Error("init on a unit that does not start a segment")
	}
}

func TestWebMScannerSecondRecorderOnTheSameStream(t *testing.T) {
	first, init1, _ := mediaRecorderLike()
	second := slices.Concat(ebmlHeader(), open(idSegment), tracksEl("A_OPUS", uintEl(0x63A2, 7)), open(idCluster), uintEl(idTimecode, 0), simpleBlock(1, 0, opusPacket(1, 0, 0)))
	stream := slices.Concat(first, second)
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var s webmScanner
		units := feedWebM(t, &s, cutRandomly(r, stream, 4)...)
		if len(units) != 7 || !bytes.Equal(units[0].init, init1) || units[6].init == nil || units[6].dur != 20*time.Millisecond {
			t.Fatalf("%d units; want 7, the 7th with the second recording's init", len(units))
		}
		if want := slices.Concat(ebmlHeader(), open(idSegment), tracksEl("A_OPUS", uintEl(0x63A2, 7))); !bytes.Equal(units[6].init, want) {
			t.Fatalf("second init % x", units[6].init)
		}
	}
}

func TestOpusDuration(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		pkt  []byte
		want time.Duration
	}{
		{opusPacket(0, 0, 0), 10 * ms}, {opusPacket(3, 0, 0), 60 * ms}, {opusPacket(11, 1, 0), 120 * ms},
		{opusPacket(12, 0, 0), 10 * ms}, {opusPacket(13, 2, 0), 40 * ms},
		{opusPacket(16, 0, 0), 2500 * time.Microsecond}, {opusPacket(19, 0, 0), 20 * ms}, {opusPacket(31, 3, 6), 120 * ms},
		{opusPacket(17, 3, 0), 0}, {[]byte{31<<3 | 3}, 0}, {nil, 0},
		{opusPacket(3, 3, 63), 0}, {opusPacket(31, 3, 7), 0}, // over 120 ms: invalid
	} {
		if got := opusDuration(c.pkt); got != c.want {
			t.Errorf("TOC %08b: %v, want %v", c.pkt[:min(1, len(c.pkt))], got, c.want)
		}
	}
}

func TestWebMScannerLacedBlocks(t *testing.T) {
	p20, p10 := opusPacket(31, 0, 0), opusPacket(30, 0, 0)    // 20 ms, 10 ms; 3 bytes each
	big := append(opusPacket(29, 0, 0), make([]byte, 300)...) // 5 ms, 303 bytes
	for _, c := range []struct {
		name  string
		block []byte
		want  time.Duration
	}{
		{"xiph", slices.Concat([]byte{0x81, 0, 0, 0x82, 2, 255, 48, 3}, big, p10, p20), 35 * time.Millisecond},
		{"ebml", slices.Concat([]byte{0x81, 0, 0, 0x86, 2, 0x41, 0x2F, 0x5E, 0xD3}, big, p10, p20), 35 * time.Millisecond},
		{"fixed", slices.Concat([]byte{0x81, 0, 0, 0x84, 1}, p20, p10), 30 * time.Millisecond},
	} {
		stream := slices.Concat(ebmlHeader(), open(idSegment), tracksEl("A_OPUS"), open(idCluster), el(idSimpleBlock, c.block))
		var s webmScanner
		units, err := s.feed(stream)
		if err != nil || len(units) != 1 || units[0].dur != c.want {
			t.Errorf("%s lacing: %d units, err %v; want one of %v", c.name, len(units), err, c.want)
			continue
		}
		if units[0].dur != c.want {
			t.Errorf("%s lacing: %v, want %v", c.name, units[0].dur, c.want)
		}
	}
}

// Codecs without a duration in their packets: DefaultDuration, BlockDuration,
// or else the gap to the track's next block; other tracks' blocks carry 0
// and keep their place in the order.
func TestWebMScannerDurationsWithoutOpus(t *testing.T) {
	block := func(track byte, tc int16) []byte { return simpleBlock(track, tc, []byte{1, 2, 3}) }
	video := el(idTrackEntry, uintEl(idTrackNumber, 2), uintEl(idTrackType, 1), el(idCodecID, []byte("V_VP8")))
	stream := slices.Concat(ebmlHeader(), open(idSegment), el(idInfo, uintEl(idTimecodeScale, 1000)), // µs ticks
		el(idTracks, el(idTrackEntry, uintEl(idTrackNumber, 1), uintEl(idTrackType, 2), el(idCodecID, []byte("A_VORBIS"))), video),
		open(idCluster), uintEl(idTimecode, 0), block(1, 0), block(2, 5), block(1, 23220),
		el(idBlockGroup, el(idBlock, block(1, 30000)[2:]), uintEl(idBlockDuration, 11610)), block(1, 32000))
	var s webmScanner
	units := feedWebM(t, &s, stream)
	got := func() (d []time.Duration) {
		for _, u := range units {
			d = append(d, u.dur)
		}
		return d
	}
	// The third Vorbis block waits for the next, and BlockDuration beats the gap.
	if want := []time.Duration{23220 * time.Microsecond, 0, 6780 * time.Microsecond, 11610 * time.Microsecond}; !slices.Equal(got(), want) {
		t.Fatalf("durations %v, want %v", got(), want)
	}
	units = s.flush()
	if want := []time.Duration{6780 * time.Microsecond}; !slices.Equal(got(), want) {
		t.Fatalf("flushed %v, want %v (the last measured gap)", got(), want)
	}
	if units = s.flush(); len(units) != 0 {
		t.Fatal("a second flush returned units")
	}
	// DefaultDuration counts per laced frame.
	stream = slices.Concat(ebmlHeader(), open(idSegment), tracksEl("A_AAC", uintEl(idDefaultDuration, 21333333)), open(idCluster), block(1, 0))
	s = webmScanner{}
	if units = feedWebM(t, &s, stream); len(units) != 1 || units[0].dur != 21333333 {
		t.Fatalf("DefaultDuration: %v", got())
	}
}

func TestWebMScannerRefuses(t *testing.T) {
	stream, _, _ := mediaRecorderLike()
	head := slices.Concat(ebmlHeader(), open(idSegment))
	for name, data := range map[string][]byte{
		"MP3":                  frames(hdrV1Stereo, 2, 0x55),
		"text":                 []byte("hello"),
		"one wrong byte":       {0x1A, 0x45, 0x00},
		"another DocType":      el(idEBML, el(idDocType, []byte("mkv3d"))),
		"a Cluster first":      slices.Concat(head, open(idCluster)),
		"no audio track":       slices.Concat(head, el(idTracks, el(idTrackEntry, uintEl(idTrackNumber, 1), uintEl(idTrackType, 1)))),
		"a huge block":         slices.Concat(head, tracksEl("A_OPUS"), open(idCluster), idBytes(idSimpleBlock), sizeBytes(maxWebMElement+1)),
		"unknown-size Void":    slices.Concat(head, open(0xEC)),
		"child overruns":       slices.Concat(head, tracksEl("A_OPUS"), el(idCluster, idBytes(idTimecode), sizeBytes(5), []byte{0})),
		"a broken block":       slices.Concat(head, tracksEl("A_OPUS"), open(idCluster), el(idSimpleBlock, []byte{0x81})),
		"a Segment in Segment": slices.Concat(head, open(idSegment)),
		"garbage after blocks": slices.Concat(stream, []byte{0x00, 0x01}),
		"endless Info":         slices.Concat(head, bytes.Repeat(el(idInfo, make([]byte, 1000)), 1100)),
	} {
		var s webmScanner
		if _, err := s.feed(data); !errors.Is(err, ErrNotWebM) {
			t.Errorf("%s: err = %v, want ErrNotWebM", name, err)
		}
		// The refusal leaves no trace: the stream from the start works.
		if units := feedWebM(t, &s, stream); len(units) != 6 {
			t.Errorf("%s: %d units after the refusal, want 6", name, len(units))
		}
	}
}

// A refused feed changes nothing, whatever it completed first; mark and
// rollback undo a feed that succeeded, so a retry is byte-identical.
func TestWebMScannerAllOrNothingAndRollback(t *testing.T) {
	stream, _, want := mediaRecorderLike()
	r := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		var s webmScanner
		var got [][]byte
		off := 0
		for _, p := range cutRandomly(r, stream, 6) {
			// The rest of the stream and a byte that cannot start an element.
			if _, err := s.feed(slices.Concat(stream[off:], []byte{0})); !errors.Is(err, ErrNotWebM) {
				t.Fatalf("garbage at the end: err = %v", err)
			}
			off += len(p)
			s.mark()
			if _, err := s.feed(p); err != nil {
				t.Fatal(err)
			}
			s.rollback() // the session refused it: buffer full
			units, err := s.feed(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range units {
				got = append(got, u.data)
			}
		}
		if !slices.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("units after refusals and rollbacks differ: %d of %d", len(got), len(want))
		}
	}
}

// Dropped elements are skipped as they pass, however large, and an element
// the scanner must hold stays whole however it is cut.
func TestWebMScannerMemoryIsBounded(t *testing.T) {
	var s webmScanner
	start := slices.Concat(ebmlHeader(), open(idSegment), tracksEl("A_OPUS"), open(idCluster), idBytes(0xEC), sizeBytes(64<<20))
	feedWebM(t, &s, start)
	chunk := make([]byte, 64<<10)
	for range 1024 {
		feedWebM(t, &s, chunk)
		if len(s.cur.carry) > 0 {
			t.Fatalf("carried %d bytes of a dropped element", len(s.cur.carry))
		}
	}
	if units := feedWebM(t, &s, simpleBlock(1, 0, opusPacket(31, 0, 0))); len(units) != 1 {
		t.Fatalf("%d units after 64 MiB of Void", len(units))
	}
	// Repeated Timecodes replace each other.
	feedWebM(t, &s, bytes.Repeat(uintEl(idTimecode, 5), 10000))
	if units := feedWebM(t, &s, simpleBlock(1, 0, opusPacket(31, 0, 0))); len(units) != 1 || len(units[0].data) > 20 || len(units[0].resume) > 20 {
		t.Fatalf("after 10,000 Timecodes: %d units, %d bytes", len(units), len(units[0].data))
	}
}

// FuzzWebMScanner checks that cutting never changes the outcome, and that
// what the framer writes of the units reads back as them; its seeds are in
// testdata/fuzz/FuzzWebMScanner.
func FuzzWebMScanner(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		var whole webmScanner
		want, wantErr := whole.feed(data)
		var s webmScanner
		var got []webmUnit
		var err error
		for _, p := range cutRandomly(rand.New(rand.NewPCG(seed, 0)), data, 3) {
			var units []webmUnit
			if units, err = s.feed(p); err != nil {
				break
			}
			got = append(got, units...)
			if len(s.cur.carry) > maxWebMElement+16 {
				t.Fatalf("carried %d bytes", len(s.cur.carry))
			}
		}
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("whole: %v; cut: %v", wantErr, err)
		}
		if err != nil {
			if !errors.Is(err, ErrNotWebM) || !errors.Is(wantErr, ErrNotWebM) {
				t.Fatalf("errors not ErrNotWebM: %v, %v", err, wantErr)
			}
			return
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("cut feeding gave other units")
		}
		checkFramed(t, got)
		cluster := idBytes(idCluster)
		for i, u := range got {
			if i == 0 && u.init == nil || u.init != nil && !bytes.HasPrefix(u.init, []byte(ebmlMagic)) {
				t.Fatalf("unit %d: init % x", i, u.init[:min(4, len(u.init))])
			}
			if !bytes.HasPrefix(u.data, cluster) && !bytes.HasPrefix(u.resume, cluster) {
				t.Fatalf("unit %d can start no decoder: neither it nor its resume opens a Cluster", i)
			}
		}
	})
}
