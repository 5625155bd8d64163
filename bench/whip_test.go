package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"ffmpeg-publisher/internal/markers"
	"ffmpeg-publisher/internal/rtmptest"
)

// The WHIP client's audio: 20 ms packets, as many as the marker audio
// (with its closing unit of silence) lasts.
func TestMakeOpus(t *testing.T) {
	rtmptest.Require(t, "ffmpeg")
	pkts, err := makeOpus(1)
	if err != nil {
		t.Fatal(err)
	}
	cs := opusChunks(pkts)
	if n := len(cs); n < 55 || n > 57 {
		t.Fatalf("%d packets for 1.1 s of audio, want 55 (a trailing one for the encoder's delay)", n)
	}
	if last := cs[len(cs)-1]; last.to-last.from != opusFrame || last.from != time.Duration(len(cs)-1)*opusFrame {
		t.Errorf("last packet holds %v..%v", last.from, last.to)
	}
}

// Capture to ear by content: a recording whose every message reaches the
// player 100 ms after its timestamp's moment gives each marker onset 100 ms,
// plus the frame it waited for, plus the AAC encoder's delay (one frame,
// 21 ms), less the part of a message before the onset.
func TestEarByContent(t *testing.T) {
	rtmptest.Require(t, "ffmpeg")
	const n = 20
	flv, err := markers.Encode(markers.PCM(n, 48000), 48000, "-c:a", "aac", "-b:a", "64k", "-f", "flv")
	if err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(t.TempDir(), "rec.flv")
	if err := os.WriteFile(rec, flv, 0o644); err != nil {
		t.Fatal(err)
	}
	tagDur := time.Second * aacSamples / 48000
	sent0 := time.Now()
	var msgs []heard
	for ts := time.Duration(0); ts < (n+2)*markers.Unit; ts += tagDur {
		msgs = append(msgs, heard{ts: ts, at: sent0.Add(ts + 100*time.Millisecond)})
	}
	ears, missing, err := earByContent([]string{rec}, msgs, tagDur, sent0, sent0, n)
	if err != nil {
		t.Fatal(err)
	}
	if missing != 0 || len(ears) < n-4 {
		t.Fatalf("%d markers missing, %d placed; want all %d, their onsets placed", missing, len(ears), n)
	}
	for i, e := range ears {
		if e < 110*time.Millisecond || e > 150*time.Millisecond {
			t.Errorf("marker onset %d: %v to ear, want 100 ms + 20 ms + the encoder's delay, within a message", i, e)
		}
	}
}
