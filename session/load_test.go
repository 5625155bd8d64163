package session

import (
	"context"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// TestLoadsMatchInfo: what admission control reads of each stream is what
// Info says of it.
func TestLoadsMatchInfo(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, nil)
	if got := r.Loads(nil); len(got) != 0 {
		t.Fatalf("no streams: %v", got)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := r.Write(context.Background(), id, testSrc, frames(hdrV2Mono, 10, 1)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both publishing", func() bool {
		n := 0
		for _, l := range r.Loads(nil) {
			if l.FFmpeg == "publishing" && l.State == StateLive && !l.Stalled {
				n++
			}
		}
		return n == 2
	})
	closeRegistry(t, r)

	// Restarting with audio waiting (as in TestInfoReportsLag).
	r, _ = newTestRegistry(t, fakeffmpeg.FailAfter, nil)
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 4, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ffmpeg to fail", func() bool { info, _ := r.Info("abc"); return info.FFmpeg == "restarting" })
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 4, 2)); err != nil {
		t.Fatal(err)
	}
	info, _ := r.Info("abc")
	loads := r.Loads(nil)
	if len(loads) != 1 || loads[0].FFmpeg != info.FFmpeg || loads[0].State != info.State || loads[0].Held.Seconds() != info.Held || loads[0].Held == 0 {
		t.Errorf("loads %+v, info %s/%s held %.3f s", loads, info.State, info.FFmpeg, info.Held)
	}
}
