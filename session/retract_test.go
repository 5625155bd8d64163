package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// Two first POSTs wait for the same publish; the server refuses; both
// retract. The second retract's mark is beyond the log the first left.
func TestTwoRefusedFirstPosts(t *testing.T) {
	// The refusal must come before StartTimeout, however slow the start.
	r, _ := newTestRegistry(t, fakeffmpeg.RefuseAfter+"300ms", func(c *Config) { c.StartTimeout = time.Minute })
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("p%d", i)
		var refused atomic.Int32
		for j := 0; j < 2; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := r.Write(context.Background(), id, testSrc, modelFrames(hdrV2Mono, j*10, 10))
				switch {
				case errors.As(err, new(*UpstreamError)):
					refused.Add(1)
				case err != nil:
					t.Errorf("%s: %v", id, err)
				}
			}()
		}
		wg.Wait()
		// The last write is taken back; one before it stays, acknowledged.
		if refused.Load() == 0 {
			t.Errorf("%s: neither of two first POSTs to a refusing server got the refusal", id)
		}
	}
}

// A POST waits for the first publish; a WebSocket attaches and its write is
// acknowledged; the server refuses: the POST's retract takes the
// WebSocket's acknowledged audio too, uncounted.
func TestRetractKeepsAnotherWritersAudio(t *testing.T) {
	drops := &dropCounter{}
	r, _ := newTestRegistry(t, fakeffmpeg.RefuseAfter+"500ms", func(c *Config) { c.Observer = drops })
	posted := make(chan error)
	go func() {
		_, err := r.Write(context.Background(), "abc", testSrc, modelFrames(hdrV2Mono, 0, 10))
		posted <- err
	}()
	waitFor(t, "the ffmpeg", func() bool { info, _ := r.Info("abc"); return info.PID != 0 })
	pub, err := r.Attach("abc", Source{Transport: "websocket"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Write(context.Background(), modelFrames(hdrV2Mono, 10, 10)); err != nil {
		t.Fatal(err)
	}
	want := 10 * 144 // the WebSocket's, acknowledged
	if err := <-posted; err == nil {
		want *= 2 // written before it: it stays too, acknowledged
	} else if !errors.As(err, new(*UpstreamError)) {
		t.Fatalf("POST: %v", err)
	}
	pub.Detach(true)
	closeRegistry(t, r)
	if drops.total() != want {
		t.Fatalf("the WebSocket's 1440 acknowledged bytes: %v dropped and counted; want them counted (never_published)", drops.byCause)
	}
}

// A first POST refused with the server's error is taken back out of the
// log, but not out of the scanner: the frame it cut stays in the carry and
// the client's retry of the same bytes is garbled.
func TestRetractRollsTheScannerBack(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.RefusedWhileHeld, nil)
	release := fakeffmpeg.HoldName(dir, "abc")
	all := modelFrames(hdrV2Mono, 0, 20)
	cut := 144*5 + 70
	if _, err := r.Write(context.Background(), "abc", testSrc, all[:cut]); !errors.As(err, new(*UpstreamError)) {
		t.Fatalf("first POST: %v", err)
	}
	release()
	waitFor(t, "the retry accepted", func() bool {
		_, err := r.Write(context.Background(), "abc", testSrc, all[:cut])
		return err == nil
	})
	if _, err := r.Write(context.Background(), "abc", testSrc, all[cut:]); err != nil {
		t.Fatal(err)
	}
	closeRegistry(t, r)
	wantAllFrames(t, dir, "abc", 20)
}

// POST A waits on a first ffmpeg; POST B, a new recording, closes it at the
// segment boundary and starts the next one. The first ffmpeg dies before
// publishing: A is refused and its retract also takes B's units out of the
// log; B is acknowledged when the second ffmpeg publishes.
func TestRetractKeepsAPostWrittenBefore(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.SlowStart, nil)
	ctx := context.Background()
	errA := make(chan error)
	go func() {
		_, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV2Mono, 0, 10))
		errA <- err
	}()
	waitFor(t, "the first ffmpeg", func() bool { info, _ := r.Info("abc"); return info.PID != 0 })
	info, _ := r.Info("abc")
	errB := make(chan error)
	go func() {
		_, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV1Stereo, 10, 10))
		errB <- err
	}()
	// B is in the log behind A, and waits for the first ffmpeg to go.
	both := len(modelFrames(hdrV2Mono, 0, 10)) + len(modelFrames(hdrV1Stereo, 10, 10))
	waitFor(t, "B in the log", func() bool { info, _ := r.Info("abc"); return info.Buffered >= both })
	syscall.Kill(info.PID, syscall.SIGKILL)
	// B wrote after A: A's audio stays in the log, acknowledged.
	if err := <-errA; err != nil {
		t.Fatalf("A: %v", err)
	}
	if err := <-errB; err != nil {
		t.Fatalf("B: %v", err)
	}
	closeRegistry(t, r)
	wantAllFrames(t, dir, "abc", 20)
}

var restartsWanted = 2

// An ffmpeg that published and is then cut for a stall before reporting
// more than its first frame: the rewind goes 1.5 s back from the log's
// confirmed point, into audio only the ffmpeg before it had sent.
func TestRewindStaysWithinWhatTheFailedOneSent(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.StallTimeout = time.Second })
	ctx := context.Background()
	if _, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV2Mono, 0, 100)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all reported sent", func() bool { info, _ := r.Info("abc"); return info.Output >= 3.5 })
	info, _ := r.Info("abc")
	r.cfg.FFmpeg.ExtraEnv[2] = "FAKE_FFMPEG_MODE=" + fakeffmpeg.Stall // the next ffmpegs report once, then hang
	syscall.Kill(info.PID, syscall.SIGKILL)                           // no rewind: not an output failure
	for n := 100; ; n++ {
		if _, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV2Mono, n, 1)); err != nil {
			t.Fatal(err)
		}
		if info, _ := r.Info("abc"); info.Restarts >= restartsWanted {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	closeRegistry(t, r)
	runs := publishedFrames(t, dir, "abc")
	for i, run := range runs {
		if len(run) > 0 {
			t.Logf("run %d: frames %d..%d", i, run[0], run[len(run)-1])
		}
	}
	if len(runs) < 3 || len(runs[1]) == 0 || len(runs[2]) == 0 {
		t.Fatalf("runs: %d", len(runs))
	}
	// Allowed before run 2's start: the pre-roll and 0.5 s of staleness (14 frames).
	if limit := int(runs[1][0]) - maxPreroll - 1 - 14; int(runs[2][0]) < limit {
		t.Fatalf("run 2 reported one frame sent, yet run 3 starts at frame %d, %d frames (%.1f s) before run 2's start",
			runs[2][0], runs[1][0]-runs[2][0], float64(runs[1][0]-runs[2][0])*0.036)
	}
}

// An ffmpeg that cannot flush (its RTMP server stalled) is interrupted
// after the flush grace; ffmpeg exits 255 on SIGINT, which Stop reports as
// clean, and closeAttempt then confirms everything it was given: the audio
// it never sent is neither published nor counted as dropped.
func TestInterruptedFlushConfirmsOnlyWhatWasSent(t *testing.T) {
	script := t.TempDir() + "/ffmpeg"
	os.WriteFile(script, []byte("#!/bin/sh\ntrap 'exit 255' INT\necho 'progress=continue' >&3\necho '[info] loaded' >&2\nwhile :; do sleep 0.05; done\n"), 0o755)
	drops := &dropCounter{}
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) {
		c.FFmpeg.Binary = script
		c.FlushGrace = 300 * time.Millisecond
		c.Observer = drops
	})
	if _, err := r.Write(context.Background(), "abc", testSrc, modelFrames(hdrV2Mono, 0, 10)); err != nil {
		t.Fatal(err)
	}
	r.End("abc", CauseClient)
	// The end keeps starting ffmpegs to send the held audio for endFlush
	// (10 s), which is closeRegistry's whole deadline.
	ctx, cancel := context.WithTimeout(context.Background(), endFlush+20*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if drops.total() == 0 {
		t.Fatalf("10 frames acknowledged, none sent (output time 0), nothing counted as dropped")
	}
}

// Held audio in several formats when the stream ends: finish sends one
// segment per ffmpeg and counts each finished segment as a failure, so
// the backoff between segments (0.25, 0.5, 1, 2, 2, ... s) runs out
// endFlush while the RTMP server is fine.
func TestEndSendsEverySegment(t *testing.T) {
	drops := &dropCounter{}
	r, dir := newTestRegistry(t, fakeffmpeg.NameHeld, func(c *Config) { c.Observer = drops })
	release := fakeffmpeg.HoldName(dir, "abc")
	pub, err := r.Attach("abc", Source{Transport: "websocket"})
	if err != nil {
		t.Fatal(err)
	}
	hdrs := [][]byte{hdrV2Mono, hdrV1Stereo, hdrV25Mono}
	if _, err := pub.Write(context.Background(), modelFrames(hdrs[0], 0, 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restart", func() bool { info, _ := r.Info("abc"); return info.FFmpeg == "restarting" })
	for i := 2; i < 5; i++ { // held: no ffmpeg runs
		if _, err := pub.Write(context.Background(), modelFrames(hdrs[i%3], i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	release()
	pub.Detach(true)
	closeRegistry(t, r)
	if drops.total() > 0 {
		t.Fatalf("the RTMP server took every publish, yet %v bytes were given up", drops.byCause)
	}
}

// A first POST waiting for a slow publish is a client still there: the
// stream must not go idle under it, or the next POST, sent once it is
// answered, opens a second stream for the same ID.
func TestNoIdleWhileTheFirstPostWaits(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.SlowStart, func(c *Config) {
		c.StartTimeout = 600 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
	})
	ctx := context.Background()
	if _, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV2Mono, 0, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV2Mono, 10, 10)); err != nil {
		t.Fatal(err)
	}
	closeRegistry(t, r)
	if runs := len(fakeffmpeg.OutputFiles(dir, "abc")); runs != 1 {
		t.Fatalf("%d ffmpegs for one stream, want 1", runs)
	}
	wantAllFrames(t, dir, "abc", 20)
}
