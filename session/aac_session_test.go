package session

import (
	"context"
	"syscall"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// numberedAAC is frames from..from+n-1 of a stream in c, each payload
// filled with its number.
func numberedAAC(c adtsConfig, from, n int) []byte {
	var b []byte
	for i := from; i < from+n; i++ {
		b = append(b, adtsFrame(c, false, 40, byte(i))...)
	}
	return b
}

// aacRuns returns the frame numbers each fake ffmpeg of id published (the
// fake writes the raw frames it takes from FLV AAC tags).
func aacRuns(t *testing.T, dir, id string, payload int) [][]int {
	t.Helper()
	var runs [][]int
	for _, out := range received(t, dir, id) {
		if len(out)%payload != 0 {
			t.Fatalf("%d bytes: not whole frames of %d", len(out), payload)
		}
		var run []int
		for ; len(out) > 0; out = out[payload:] {
			run = append(run, int(out[0]))
		}
		runs = append(runs, run)
	}
	return runs
}

// TestAACSurvivesARestart: an AAC stream's ffmpeg killed mid-stream is
// replaced, and the next one starts at the first frame not sent, after one
// frame of pre-roll; every acknowledged frame is published, in order, and
// the seconds are counted from the frames.
func TestAACSurvivesARestart(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Lag, nil)
	ctx := context.Background()
	pub, err := r.Attach("aac", Source{Transport: "websocket", Format: "aac"})
	if err != nil {
		t.Fatal(err)
	}
	in := numberedAAC(lc16Mono, 0, 40)
	// Cut across frames and inside a header.
	for _, p := range [][]byte{in[:3], in[3:1000], in[1000:1003], in[1003:1200]} {
		if _, err := pub.Write(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// Killed only once it has reported every frame it sent: one sent and not
	// yet reported is rightly replayed, which this test would count as a duplicate.
	lag := (fakeffmpeg.LagBehind + lc16Mono.duration()).Seconds()
	waitFor(t, "the publish", func() bool {
		info, _ := r.Info("aac")
		return info.FFmpeg == "publishing" && info.Held <= lag
	})
	info, _ := r.Info("aac")
	syscall.Kill(info.PID, syscall.SIGKILL) // it held the last 300 ms
	waitFor(t, "the restart", func() bool { info, _ := r.Info("aac"); return info.FFmpeg == "restarting" })
	if _, err := pub.Write(ctx, in[1200:]); err != nil {
		t.Fatal(err)
	}
	info, _ = r.Info("aac")
	if want := 40 * lc16Mono.duration(); info.Audio != want {
		t.Errorf("counted %s, want %s", info.Audio, want)
	}
	pub.Detach(true)
	closeRegistry(t, r)
	runs := aacRuns(t, dir, "aac", 40-7)
	if len(runs) != 2 {
		t.Fatalf("%d runs, want 2: %v", len(runs), runs)
	}
	t.Logf("frames published by each ffmpeg: %v", runs)
	next := 0
	for i, run := range runs {
		if i > 0 && (run[0] != next-1) {
			t.Errorf("run %d starts at frame %d; want one frame of pre-roll before %d", i, run[0], next)
		}
		for j, n := range run {
			if j > 0 && n != run[j-1]+1 {
				t.Fatalf("run %d: frames %v out of order", i, run)
			}
		}
		next = run[len(run)-1] + 1
	}
	if next != 40 {
		t.Errorf("published up to frame %d of 40: %v", next, runs)
	}
}
