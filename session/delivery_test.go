package session

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// Regression tests for the ways acknowledged audio was lost or written
// twice before the stream log; each failed on the code before it.

// publishedFrames returns the numbers of the model frames the fakes of id
// published, run after run.
func publishedFrames(t *testing.T, dir, id string) [][]uint32 {
	t.Helper()
	var runs [][]uint32
	for _, out := range received(t, dir, id) {
		var run []uint32
		for len(out) > 0 {
			h, ok := parseHeader(out)
			if !ok || h.length > len(out) {
				t.Fatalf("%s: not a frame", id)
			}
			if n, ok := frameNumber(out[:h.length]); ok {
				run = append(run, n)
			}
			out = out[h.length:]
		}
		runs = append(runs, run)
	}
	return runs
}

// wantAllFrames fails unless frames 0..n-1 were all published, in order,
// with nothing twice beyond the pre-roll of a restart.
func wantAllFrames(t *testing.T, dir, id string, n int) {
	t.Helper()
	m := &modelStream{id: id}
	for i := 0; i < n; i++ {
		m.ends = append(m.ends, i+1)
	}
	m.acked = n
	checkModelStream(t, dir, m)
}

func modelFrames(hdr []byte, from, n int) []byte {
	var b []byte
	for i := from; i < from+n; i++ {
		b = append(b, modelFrame(hdr, uint32(i), 0)...)
	}
	return b
}

// Scenario 3: the first POST is answered once the publish is open; a slow
// server that then refuses gets the POST a 502, and nothing acknowledged
// is dropped.
func TestFirstPostWaitsForThePublish(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.RefuseAfter+"400ms", nil)
	_, err := r.Write(context.Background(), "abc", testSrc, modelFrames(hdrV2Mono, 0, 10))
	var ue *UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("first POST to a server that refuses after 400 ms: %v, want the refusal", err)
	}
	info, _ := r.Info("abc")
	if info.Buffered != 0 || info.Dropped != 0 {
		t.Errorf("after the refusal: %d bytes held, %d dropped; want none (the POST was not acknowledged)", info.Buffered, info.Dropped)
	}
}

// Scenario 4: a new recording in another format while ffmpeg restarts:
// the audio held for the old format is still published.
func TestFormatChangeWhileRestartingKeepsTheHeldAudio(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Lag, nil)
	ctx := context.Background()
	if _, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV2Mono, 0, 20)); err != nil {
		t.Fatal(err)
	}
	info, _ := r.Info("abc")
	syscall.Kill(info.PID, syscall.SIGKILL) // it held the last 300 ms
	waitFor(t, "the restart", func() bool { info, _ := r.Info("abc"); return info.FFmpeg == "restarting" })
	if _, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV1Stereo, 20, 10)); err != nil {
		t.Fatal(err)
	}
	closeRegistry(t, r)
	wantAllFrames(t, dir, "abc", 30)
}

// Scenario 5: a connection's writes into a first ffmpeg that cannot
// publish yet are bounded by the buffer: beyond it they are refused, and
// everything acknowledged is published once the name is free.
func TestBufferBoundsTheFirstFFmpegToo(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.NameHeld, func(c *Config) { c.BufferAudio = time.Second })
	release := fakeffmpeg.HoldName(dir, "abc")
	pub, err := r.Attach("abc", Source{Transport: "websocket"})
	if err != nil {
		t.Fatal(err)
	}
	acked, refused := 0, 0
	for i := 0; i < 60; i++ { // 2.16 s of 36 ms frames, 2 at a time
		if _, err := pub.Write(context.Background(), modelFrames(hdrV2Mono, acked, 2)); errors.Is(err, ErrBufferFull) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		} else {
			acked += 2
		}
	}
	if refused == 0 || acked > 30 {
		t.Fatalf("%d frames acknowledged, %d writes refused: the buffer of 1 s does not bound them", acked, refused)
	}
	release()
	pub.Detach(true)
	closeRegistry(t, r)
	wantAllFrames(t, dir, "abc", acked)
}

// Scenario 6: what a dying ffmpeg had read but not sent is replayed, also
// when the frames were written before its publish.
func TestReplayCoversWhatTheDeadFFmpegHadRead(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Lag, nil)
	ctx := context.Background()
	if _, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV2Mono, 0, 50)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write(ctx, "abc", testSrc, modelFrames(hdrV2Mono, 50, 14)); err != nil {
		t.Fatal(err)
	}
	info, _ := r.Info("abc")
	syscall.Kill(info.PID, syscall.SIGKILL)
	waitFor(t, "the next ffmpeg", func() bool { info, _ := r.Info("abc"); return info.Restarts == 1 })
	closeRegistry(t, r)
	wantAllFrames(t, dir, "abc", 64)
	if runs := publishedFrames(t, dir, "abc"); len(runs) != 2 {
		t.Fatalf("%d runs, want 2", len(runs))
	}
}

// Scenario 7: a refused write leaves the scanner as it was: the frame cut
// by the previous write is whole when the client retries.
func TestRefusedWriteLeavesNoTrace(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.NameHeld, func(c *Config) { c.BufferAudio = 200 * time.Millisecond })
	release := fakeffmpeg.HoldName(dir, "abc")
	pub, err := r.Attach("abc", Source{Transport: "websocket"})
	if err != nil {
		t.Fatal(err)
	}
	all := modelFrames(hdrV2Mono, 0, 20)
	cut := 144*5 + 70 // five frames and half of the sixth
	if _, err := pub.Write(context.Background(), all[:cut]); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Write(context.Background(), all[cut:]); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("a write beyond the buffer: %v", err)
	}
	release()
	waitFor(t, "the publish", func() bool { info, _ := r.Info("abc"); return info.FFmpeg == "publishing" })
	waitFor(t, "room in the buffer", func() bool { info, _ := r.Info("abc"); return info.Buffered < 144 })
	if _, err := pub.Write(context.Background(), all[cut:]); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	pub.Detach(true)
	closeRegistry(t, r)
	wantAllFrames(t, dir, "abc", 20)
}

// Scenario 9: a write refused while the stream cannot go live is not
// written behind the client's back: its retry is published once.
func TestRefusedWriteIsNotPublishedTwice(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.RefusedWhileHeld, nil)
	release := fakeffmpeg.HoldName(dir, "abc")
	pub, err := r.Attach("abc", Source{Transport: "websocket"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := pub.Write(ctx, modelFrames(hdrV2Mono, 0, 5)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refusal", func() bool { return pub.Failure() != nil })
	b := modelFrames(hdrV2Mono, 5, 5)
	var ue *UpstreamError
	if _, err := pub.Write(ctx, b); !errors.As(err, &ue) {
		t.Fatalf("a write while the server refuses: %v, want the refusal", err)
	}
	release()
	waitFor(t, "the publish", func() bool { return pub.Failure() == nil })
	if _, err := pub.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	pub.Detach(true)
	closeRegistry(t, r)
	wantAllFrames(t, dir, "abc", 10)
}

// Scenario 11: a new ffmpeg that starts mid-stream first reads the frames
// the first unsent one borrows from (the bit reservoir) and the one before
// (the overlap).
func TestResumeIncludesThePreroll(t *testing.T) {
	var l streamLog
	l.preroll = mp3Preroll
	for i := 0; i < 10; i++ {
		// Frames of 144 bytes hold 144-4-9 = 131 bytes of main data; frame 6
		// starts 200 bytes back: in frame 4.
		reservoir := byte(0)
		if i == 6 {
			reservoir = 200
		}
		l.append(unit{data: modelFrame(hdrV2Mono, uint32(i), reservoir), dur: 36 * time.Millisecond})
	}
	l.confirm(6)
	if got := l.resumeAt(); got != 3 {
		t.Fatalf("resume at %d, want 3 (frames 4-5 for the reservoir, 3 for the overlap)", got)
	}
	if l.pendAudio != 4*36*time.Millisecond {
		t.Errorf("unconfirmed %v", l.pendAudio)
	}
	l.confirm(10)
	if l.resumeAt() != 10 || l.pendBytes != 0 {
		t.Errorf("all confirmed: resume at %d, %d bytes pending", l.resumeAt(), l.pendBytes)
	}
}

// Scenario 8: a chunk boundary that cuts an ID3v1 tag does not lose sync.
func TestScannerKeepsSyncAcrossACutTag(t *testing.T) {
	file := append(frames(hdrV2Mono, 3, 1), append([]byte("TAG"), bytes.Repeat([]byte{' '}, 125)...)...)
	stream := append(append([]byte(nil), file...), file...)
	for cut := 3*144 + 1; cut <= 3*144+2; cut++ { // "T|AG" and "TA|G"
		var s mp3Scanner
		if _, err := s.feed(stream[:cut]); err != nil {
			t.Fatal(err)
		}
		if _, err := s.feed(stream[cut:]); err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		s.flush()
		if s.stats.Frames != 6 {
			t.Errorf("cut at %d: %d frames, want 6", cut, s.stats.Frames)
		}
	}
}
