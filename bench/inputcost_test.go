package main

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// The input section's FLV must be what the session writes: the header
// once, then one audio tag per MP3 frame, each followed by its size.
func TestFLVTagsFrameEachMP3Frame(t *testing.T) {
	frame := make([]byte, frameLen([]byte{0xff, 0xfb, 0x50, 0xc4})) // 64 kbps, no padding
	copy(frame, []byte{0xff, 0xfb, 0x50, 0xc4})
	mp3 := bytes.Repeat(frame, 3)
	cs := chunks(mp3, 50*time.Millisecond)
	if len(cs) != 2 {
		t.Fatalf("%d chunks of 3 frames at 50 ms, want 2", len(cs))
	}
	first, at := flvTags(cs[0], 0)
	second, _ := flvTags(cs[1], at)
	if !bytes.HasPrefix(first, []byte("FLV\x01\x04")) || bytes.HasPrefix(second, []byte("FLV")) {
		t.Fatal("the FLV header must open the first chunk only")
	}
	tags := 0
	for b := first[13:]; len(b) > 0; tags++ {
		size := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		if b[0] != 8 || size != len(frame)+1 || b[11] != 0x2e || !bytes.Equal(b[12:11+size], frame) {
			t.Fatalf("tag %d: type %d, size %d", tags, b[0], size)
		}
		if prev := binary.BigEndian.Uint32(b[11+size:]); prev != uint32(11+size) {
			t.Fatalf("tag %d: previous tag size %d, want %d", tags, prev, 11+size)
		}
		b = b[11+size+4:]
	}
	if tags != 2 {
		t.Errorf("%d tags in the first 50 ms, want 2 (26 ms frames)", tags)
	}
	if ts := int(second[4])<<16 | int(second[5])<<8 | int(second[6]); ts != 52 {
		t.Errorf("the third frame's timestamp is %d ms, want 52", ts)
	}
}
