package session

import (
	"context"
	"math"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// TestInfoReportsLag: held_seconds is the audio accepted that no ffmpeg
// confirmed sending, sent_seconds the rest; the status page's lag.
func TestInfoReportsLag(t *testing.T) {
	t.Run("healthy: everything confirmed", func(t *testing.T) {
		r, _ := newTestRegistry(t, fakeffmpeg.Normal, nil)
		if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 10, 1)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "everything confirmed", func() bool { info, _ := r.Info("abc"); return info.Held == 0 })
		info, _ := r.Info("abc")
		if math.Abs(info.Sent-0.36) > 1e-9 || info.Format != "mp3" {
			t.Errorf("sent %.3f s of 0.36 s, format %q", info.Sent, info.Format)
		}
		closeRegistry(t, r)
	})
	t.Run("restarting: the audio waits", func(t *testing.T) {
		r, _ := newTestRegistry(t, fakeffmpeg.FailAfter, nil)
		if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 4, 1)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "ffmpeg to fail", func() bool { info, _ := r.Info("abc"); return info.FFmpeg == "restarting" })
		if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 4, 2)); err != nil {
			t.Fatal(err)
		}
		// The failed ffmpeg's 4 frames are sent again (upstreamRewind), and
		// the 4 new ones wait: 8 frames of 36 ms, none confirmed.
		info, _ := r.Info("abc")
		if math.Abs(info.Held-0.288) > 1e-9 || info.Sent != 0 {
			t.Errorf("held %.3f s, sent %.3f s; want 0.288 s held, none sent", info.Held, info.Sent)
		}
	})
}
