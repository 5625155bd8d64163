package session

import (
	"bytes"
	"slices"
	"testing"
)

// flvTags parses an FLV stream into its audio tags' timestamps and payloads.
func flvTags(t *testing.T, b []byte) (ts []int, flags []byte, payload []byte) {
	t.Helper()
	if !bytes.HasPrefix(b, flvHeader) {
		t.Fatalf("no FLV header: % x", b[:min(len(b), 13)])
	}
	b = b[len(flvHeader):]
	for len(b) > 0 {
		if len(b) < 15 || b[0] != 8 {
			t.Fatalf("bad tag at % x", b[:min(len(b), 15)])
		}
		size := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		ts = append(ts, int(b[7])<<24|int(b[4])<<16|int(b[5])<<8|int(b[6]))
		flags = append(flags, b[11])
		payload = append(payload, b[12:11+size]...)
		prev := int(b[11+size])<<24 | int(b[12+size])<<16 | int(b[13+size])<<8 | int(b[14+size])
		if prev != size+11 {
			t.Fatalf("PreviousTagSize %d, want %d", prev, size+11)
		}
		b = b[15+size:]
	}
	return ts, flags, payload
}

func TestFLVFramerOneTagPerFrameTimedBySamples(t *testing.T) {
	var f flvFramer
	a := frames(hdrV2Mono, 3, 1) // 16 kHz mono: 36 ms a frame
	b := frames(hdrV2Mono, 2, 2)
	out := append([]byte(nil), f.frame(nil, []unit{{data: a}}, true)...)
	out = append(out, f.frame(nil, []unit{{data: b}}, false)...)
	ts, flags, payload := flvTags(t, out)
	if want := []int{0, 36, 72, 108, 144}; !slices.Equal(ts, want) {
		t.Errorf("timestamps %v, want %v", ts, want)
	}
	if !bytes.Equal(payload, append(a, b...)) {
		t.Error("payloads are not the frames written")
	}
	for _, fl := range flags {
		if fl>>4 != 2 || fl&1 != 0 {
			t.Errorf("flags %08b: want MP3, mono", fl)
		}
	}
	// A new ffmpeg starts over: header and timestamp 0.
	ts, _, _ = flvTags(t, f.frame(nil, []unit{{data: frames(hdrV1Stereo, 2, 3)}}, true))
	if !slices.Equal(ts, []int{0, 26}) {
		t.Errorf("after a restart: timestamps %v", ts)
	}
}

func TestFLVFramerKeepsBytesThatAreNotAFrame(t *testing.T) {
	var f flvFramer
	junk := []byte{1, 2, 3}
	_, _, payload := flvTags(t, f.frame(nil, []unit{{data: append(frames(hdrV2Mono, 1, 1), junk...)}}, true))
	if !bytes.HasSuffix(payload, junk) || len(payload) != 144+3 {
		t.Errorf("payload of %d bytes", len(payload))
	}
}
