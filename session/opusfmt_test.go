package session

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
)

// Opus packets from libopus, cut anywhere on their way in, come out of the
// session's framer as a WebM that ffmpeg decodes to exactly their audio,
// and silence in it decodes too.
func TestOpusUnitsDecodeWithFFmpeg(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "ffprobe")
	pkts := rtmptest.OpusPackets(t, 2)
	var in []byte
	var want time.Duration
	for _, p := range pkts {
		in = AppendOpus(in, p)
		want += opusDuration(p)
	}
	if want != time.Duration(len(pkts))*20*time.Millisecond || want < 2*time.Second {
		t.Fatalf("%d packets of %v: want 20 ms packets, one a page", len(pkts), want)
	}
	seed := rand.Uint64()
	var o opusUnits
	var units []unit
	for _, piece := range cutRandomly(rand.New(rand.NewPCG(seed, 0)), in, 50) {
		o.mark()
		got, err := o.feed(piece)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		units = append(units, got...)
	}
	if len(units) != len(pkts) || unitsAudio(units) != want || units[0].init == nil || !units[0].newSeg {
		t.Fatalf("seed %d: %d units of %v, want %d of %v, the first with init data", seed, len(units), unitsAudio(units), len(pkts), want)
	}
	units = append(units, o.silence(time.Second)...)
	want += unitsAudio(units[len(pkts):])
	var f webmFramer
	out := bytes.Clone(f.frame(units[0].init, units, true))
	file := filepath.Join(t.TempDir(), "opus.webm")
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command("ffmpeg", "-v", "error", "-xerror", "-i", file, "-f", "null", "-").CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg decoding: %v\n%s", err, msg)
	}
	codec, _, seconds := rtmptest.Probe(t, file)
	if got := time.Duration(seconds * float64(time.Second)); codec != "opus" || (got-want).Abs() > 25*time.Millisecond {
		t.Errorf("%s of %v, want opus of %v", codec, got, want)
	}
}

// A refused write leaves the scanner as it was: the retry gives the same units.
func TestOpusUnitsRollback(t *testing.T) {
	var o opusUnits
	in := AppendOpus(AppendOpus(nil, []byte{0xF8, 1, 2}), []byte{0xF8, 3})
	o.mark()
	first, _ := o.feed(in[:4])
	o.rollback()
	again, _ := o.feed(in[:4])
	rest, _ := o.feed(in[4:])
	if len(first) != 0 || len(again) != 0 || len(rest) != 2 || rest[0].init == nil || rest[1].init != nil {
		t.Fatalf("units %d, %d, %d", len(first), len(again), len(rest))
	}
	if _, err := o.feed([]byte{0xFF, 0xFF}); err == nil {
		t.Error("a packet longer than any Opus packet was taken")
	}
}
