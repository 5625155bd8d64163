package session

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/rtmptest"
)

// TestFFmpegKeepsEveryFrame: the real ffmpeg, with the input options every
// attempt runs with, passes on every MP3 frame it is given, the first one
// included (a new attempt's first frame is audio after a restart).
func TestFFmpegKeepsEveryFrame(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg")
	}
	rtmptest.Require(t, "ffmpeg")
	for _, rate := range []int{16000, 44100} {
		mp3 := rtmptest.MP3(t, 3, rate, 1, "32k", true)
		var m mp3Units
		units, err := m.feed(mp3)
		if err != nil {
			t.Fatal(err)
		}
		units = append(units, m.flush()...)
		var f flvFramer
		out := filepath.Join(t.TempDir(), "out.mp3")
		cfg := ffpipe.Config{InputFormat: "flv", AudioCodec: "copy", OutputFormat: "mp3", Target: out}
		cmd := exec.Command("ffmpeg", ffpipe.Args(cfg)...)
		cmd.Stdin = bytes.NewReader(f.frame(nil, units, true))
		cmd.ExtraFiles = []*os.File{os.Stderr} // -progress goes to fd 3
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg: %v\n%s", err, b)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var g mp3Units
		outUnits, _ := g.feed(got)
		outUnits = append(outUnits, g.flush()...)
		if len(outUnits) != len(units) {
			t.Errorf("%d Hz: ffmpeg passed on %d of the %d frames it was given", rate, len(outUnits), len(units))
		}
	}
}
