package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/fakeffmpeg"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	fakeffmpeg.Main()
	goleak.VerifyTestMain(m)
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if os.Getenv("SESSION_TEST_LOG") != "" {
		l.SetOutput(os.Stderr)
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

// newTestRegistry returns a registry whose ffmpeg is the fake, and the
// directory the fakes write to. The registry is closed at the end.
func newTestRegistry(t *testing.T, mode string, mod func(*Config)) (*Registry, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		FFmpeg:       ffpipe.Config{Binary: os.Args[0], ExtraEnv: fakeffmpeg.Env(dir, mode)},
		RTMPBase:     "rtmp://127.0.0.1:1/live",
		StartTimeout: 5 * time.Second,
		FlushGrace:   10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	r := NewRegistry(cfg, quietLog())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.Close(ctx)
	})
	return r, dir
}

func closeRegistry(t *testing.T, r *Registry) {
	t.Helper()
	// A bound on a hang, not a timing: the fake ffmpeg is this test binary,
	// which under -race on a loaded machine takes seconds to start.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// wantOneRun fails unless exactly one fake ffmpeg for id read data (the
// refused ones never do), and it read want, in order.
func wantOneRun(t *testing.T, dir, id string, want []byte) {
	t.Helper()
	if got := received(t, dir, id); len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Fatalf("ffmpeg runs that read: %d; want one that read all %d bytes in order", len(got), len(want))
	}
}

// received returns what the fake ffmpeg(s) for id read, in pid order.
func received(t *testing.T, dir, id string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, f := range fakeffmpeg.OutputFiles(dir, id) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestChunksReachFFmpegInOrder(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
	var want []byte
	for i := 0; i < 10; i++ {
		chunk := frames(hdrV2Mono, 5, byte(i+1))
		want = append(want, chunk...)
		res, err := r.Write(context.Background(), "abc", testSrc, chunk)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if res.Bytes != int64(len(chunk)) {
			t.Fatalf("accepted %d of %d", res.Bytes, len(chunk))
		}
	}
	info, _ := r.Info("abc")
	if info.Seconds < 1.79 || info.Seconds > 1.81 { // 50 frames of 36 ms
		t.Errorf("audio seconds = %v", info.Seconds)
	}
	closeRegistry(t, r)
	wantOneRun(t, dir, "abc", want)
}

func TestConcurrentWritesNeverInterleave(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.BufferAudio = time.Minute }) // 16 s at once
	const writers = 16
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV1Stereo, 40, byte(w+1))); err != nil {
				t.Errorf("writer %d: %v", w, err)
			}
		}(w)
	}
	wg.Wait()
	closeRegistry(t, r)
	got := received(t, dir, "abc")
	if len(got) != 1 {
		t.Fatalf("%d ffmpeg runs", len(got))
	}
	// Every chunk's 40 frames are contiguous: the fill byte changes only
	// at chunk boundaries.
	seen := map[byte]bool{}
	data := got[0]
	for len(data) > 0 {
		fill := data[4]
		if seen[fill] {
			t.Fatalf("chunk %d interleaved with another", fill)
		}
		seen[fill] = true
		run := frames(hdrV1Stereo, 40, fill)
		if !bytes.HasPrefix(data, run) {
			t.Fatalf("chunk %d is cut", fill)
		}
		data = data[len(run):]
	}
	if len(seen) != writers {
		t.Fatalf("saw %d chunks", len(seen))
	}
}

func waitGone(t *testing.T, r *Registry, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		_, live := r.sessions[id]
		n := len(r.running)
		r.mu.Unlock()
		if !live && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still running", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIdleTimeoutEndsTheSession(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	chunk := frames(hdrV2Mono, 3, 1)
	if _, err := r.Write(context.Background(), "abc", testSrc, chunk); err != nil {
		t.Fatal(err)
	}
	waitGone(t, r, "abc")
	if got := received(t, dir, "abc"); len(got) != 1 || !bytes.Equal(got[0], chunk) {
		t.Fatalf("ffmpeg did not get the chunk and EOF: %d runs", len(got))
	}
	// New data after the end starts a new session and a new ffmpeg.
	if _, err := r.Write(context.Background(), "abc", testSrc, chunk); err != nil {
		t.Fatal(err)
	}
	waitGone(t, r, "abc")
	if got := received(t, dir, "abc"); len(got) != 2 {
		t.Fatalf("%d ffmpeg runs, want 2", len(got))
	}
}

func TestCloseEndsEverySessionCleanly(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		if _, err := r.Write(context.Background(), id, testSrc, frames(hdrV25Mono, 4, 9)); err != nil {
			t.Fatal(err)
		}
	}
	closeRegistry(t, r)
	for _, id := range ids {
		if got := received(t, dir, id); len(got) != 1 || len(got[0]) != 4*144 {
			t.Errorf("%s: ffmpeg did not get everything before EOF", id)
		}
	}
	if _, err := r.Write(context.Background(), "a", testSrc, frames(hdrV25Mono, 2, 9)); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("write after Close: %v", err)
	}
}

func TestCloseKillsWhenGraceRunsOut(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.IgnoreInt, func(c *Config) { c.FlushGrace = time.Hour })
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 4, 1)); err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, r, "abc")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v", err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Fatal("ffmpeg still exists after Close")
	}
}

func TestRefusals(t *testing.T) {
	t.Run("capacity", func(t *testing.T) {
		r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.MaxSessions = 1 })
		if _, err := r.Write(context.Background(), "one", testSrc, frames(hdrV2Mono, 2, 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Write(context.Background(), "two", testSrc, frames(hdrV2Mono, 2, 1)); !errors.Is(err, ErrAtCapacity) {
			t.Fatalf("second id: %v", err)
		}
		if _, err := r.Write(context.Background(), "one", testSrc, frames(hdrV2Mono, 2, 1)); err != nil {
			t.Fatalf("existing id at capacity: %v", err)
		}
	})
	t.Run("invalid id", func(t *testing.T) {
		r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
		for _, id := range []string{"", "../x", "a/b", "a b", "a?b", strings.Repeat("a", 65), "é"} {
			if _, err := r.Write(context.Background(), id, testSrc, frames(hdrV2Mono, 2, 1)); !errors.Is(err, ErrInvalidID) {
				t.Errorf("%q: %v", id, err)
			}
		}
		if files, _ := os.ReadDir(dir); len(files) != 0 {
			t.Errorf("ffmpeg ran for an invalid id")
		}
	})
	t.Run("not mp3", func(t *testing.T) {
		r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
		if _, err := r.Write(context.Background(), "abc", testSrc, []byte("<html>not audio</html>")); !errors.Is(err, ErrNotMP3) {
			t.Fatalf("err = %v", err)
		}
		waitGone(t, r, "abc")
		if files, _ := os.ReadDir(dir); len(files) != 0 {
			t.Errorf("ffmpeg ran for data that is not MP3")
		}
	})
	t.Run("ffmpeg fails", func(t *testing.T) {
		r, _ := newTestRegistry(t, fakeffmpeg.Fail, func(c *Config) { c.IdleTimeout = 2 * time.Second })
		_, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 2, 1))
		var ue *UpstreamError
		if !errors.As(err, &ue) || !strings.Contains(ue.Reason, "Connection refused") {
			t.Fatalf("err = %v, want the connection error ffmpeg printed", err)
		}
		// The stream never went live: the audio was not taken, and the
		// client's next write tries a new ffmpeg and hears why.
		if info, _ := r.Info("abc"); info.Buffered != 0 {
			t.Errorf("%d bytes of a refused write kept", info.Buffered)
		}
		_, err = r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 2, 1))
		if !errors.As(err, &ue) || !strings.Contains(ue.Reason, "Connection refused") {
			t.Fatalf("second write: %v", err)
		}
		waitGone(t, r, "abc") // the idle timeout still ends it
	})
	t.Run("ffmpeg stops reading", func(t *testing.T) {
		r, _ := newTestRegistry(t, fakeffmpeg.NoRead, func(c *Config) {
			c.WriteTimeout = 200 * time.Millisecond
			c.FlushGrace = 50 * time.Millisecond
		})
		_, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV1Stereo, 400, 1)) // > a pipe buffer
		var ue *UpstreamError
		if !errors.As(err, &ue) || !strings.Contains(ue.Reason, "took no input") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("busy", func(t *testing.T) {
		r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
		pub, err := r.Attach("abc", Source{Transport: "websocket", Remote: "192.0.2.1:5000"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Attach("abc", Source{Transport: "websocket", Remote: "x"}); !errors.Is(err, ErrBusy) {
			t.Fatalf("second publisher: %v", err)
		}
		if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 2, 1)); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "192.0.2.1") {
			t.Fatalf("POST during a publisher: %v", err)
		}
		if _, err := pub.Write(context.Background(), frames(hdrV2Mono, 2, 1)); err != nil {
			t.Fatal(err)
		}
		pub.Detach(false) // a dropped connection: the session waits
		pub2, err := r.Attach("abc", Source{Transport: "websocket", Remote: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub2.Write(context.Background(), frames(hdrV2Mono, 2, 2)); err != nil {
			t.Fatal(err)
		}
		pub2.Detach(true)
		waitGone(t, r, "abc")
		if got := received(t, dir, "abc"); len(got) != 1 || len(got[0]) != 4*144 {
			t.Fatalf("reconnecting did not continue the same ffmpeg: %d runs", len(got))
		}
	})
}

var testSrc = Source{Transport: "base64", Remote: "192.0.2.9:1234"}

// pidOf is the PID of id's ffmpeg, which a write to it has started.
func pidOf(t *testing.T, r *Registry, id string) int {
	t.Helper()
	info, ok := r.Info(id)
	if !ok || info.PID == 0 {
		t.Fatalf("%s has no ffmpeg: %+v", id, info)
	}
	return info.PID
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) { // a bound on a hang
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestKilledFFmpegIsRestartedAndTheStreamGoesOn(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
	a, b, c := frames(hdrV2Mono, 10, 1), frames(hdrV2Mono, 10, 2), frames(hdrV2Mono, 10, 3)
	if _, err := r.Write(context.Background(), "abc", testSrc, a); err != nil {
		t.Fatal(err)
	}
	// Wait until the first fake has read a, then kill it as kill -9 would.
	waitFor(t, "the first ffmpeg to read", func() bool {
		got := received(t, dir, "abc")
		return len(got) == 1 && len(got[0]) == len(a)
	})
	pid := pidOf(t, r, "abc")
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "a restart", func() bool { info, _ := r.Info("abc"); return info.Restarts == 1 && info.FFmpeg != "restarting" })
	if _, err := r.Write(context.Background(), "abc", testSrc, b); err != nil {
		t.Fatalf("write after the restart: %v", err)
	}
	if _, err := r.Write(context.Background(), "abc", testSrc, c); err != nil {
		t.Fatal(err)
	}
	info, _ := r.Info("abc")
	if !strings.Contains(info.LastError, "killed") || info.PID == pid {
		t.Errorf("info after the restart: %+v", info)
	}
	closeRegistry(t, r)
	got := received(t, dir, "abc")
	if len(got) != 2 || !bytes.Equal(got[1], append(append([]byte{}, b...), c...)) {
		t.Fatalf("ffmpeg runs %d; the second should have read b and c", len(got))
	}
}

func TestAudioIsHeldWhileFFmpegRestarts(t *testing.T) {
	// The first ffmpeg's 576 bytes are sent again (its output failed: see
	// upstreamRewind), then 576 held: the buffer takes no more.
	r, dir := newTestRegistry(t, fakeffmpeg.FailAfter, func(c *Config) { c.BufferBytes = 1200 })
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 4, 1)); err != nil {
		t.Fatal(err)
	}
	// That ffmpeg published, then broke: the next audio waits for another.
	waitFor(t, "ffmpeg to fail", func() bool { info, _ := r.Info("abc"); return info.FFmpeg == "restarting" })
	held := frames(hdrV2Mono, 4, 2) // 576 bytes
	if _, err := r.Write(context.Background(), "abc", testSrc, held); err != nil {
		t.Fatalf("write while restarting: %v", err)
	}
	if info, _ := r.Info("abc"); info.Buffered != 2*len(held) {
		t.Errorf("buffered %d", info.Buffered)
	}
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 4, 3)); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("write beyond the buffer: %v, want ErrBufferFull", err)
	}
	// The next ffmpeg gets the held audio first.
	waitFor(t, "the held audio to reach a new ffmpeg", func() bool {
		for _, run := range received(t, dir, "abc") {
			if bytes.HasSuffix(run, held) {
				return true
			}
		}
		return false
	})
}

// TestEndingPublishesHeldAudio: a stream that ends while its RTMP name is
// still taken (moved from a server whose publish lingers) publishes the
// audio it acknowledged once the name is free, rather than dropping it.
func TestEndingPublishesHeldAudio(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.NameHeld, nil)
	release := fakeffmpeg.HoldName(dir, "abc")
	var want []byte
	for i := 0; i < 3; i++ {
		chunk := frames(hdrV2Mono, 5, byte(i+1))
		want = append(want, chunk...)
		if _, err := r.Write(context.Background(), "abc", testSrc, chunk); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	r.End("abc", CauseClient)
	time.Sleep(time.Second)
	release()
	closeRegistry(t, r)
	wantOneRun(t, dir, "abc", want)
}

// TestEndDuringASlowStart: a stream that ends while its first ffmpeg is
// still loading (seconds, on a busy machine) gets the flush grace from the
// publish on, not from the end: its audio is delivered, not interrupted.
func TestEndDuringASlowStart(t *testing.T) {
	// The fake publishes 1.5 s after its start and reads 1 s later.
	r, dir := newTestRegistry(t, fakeffmpeg.SlowStart, func(c *Config) { c.FlushGrace = 1500 * time.Millisecond })
	want := frames(hdrV2Mono, 10, 1)
	// A connection: its writes do not wait for the publish.
	pub, err := r.Attach("abc", Source{Transport: "ws", Remote: "192.0.2.9:1234"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Write(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	pub.Detach(true)
	closeRegistry(t, r)
	wantOneRun(t, dir, "abc", want)
}

// startCounter counts ffmpeg starts.
type startCounter struct {
	nopObserver
	n atomic.Int32
}

func (c *startCounter) FFmpegStarted() { c.n.Add(1) }

// TestNoEndFlushForAStreamThatNeverWentLive: a connection whose RTMP server
// refuses it was told so; when it ends, its held audio is not published
// later behind its back, and ending does not keep starting ffmpeg.
func TestNoEndFlushForAStreamThatNeverWentLive(t *testing.T) {
	starts := &startCounter{}
	r, _ := newTestRegistry(t, fakeffmpeg.Fail, func(c *Config) { c.Observer = starts })
	pub, err := r.Attach("abc", Source{Transport: "ws", Remote: "192.0.2.9:1234"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Write(context.Background(), frames(hdrV2Mono, 10, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first failure", func() bool { return pub.Failure() != nil })
	before := starts.n.Load()
	pub.Detach(true)
	closeRegistry(t, r)
	// One start may have been under way when the stream ended.
	if n := starts.n.Load(); n > before+1 {
		t.Errorf("ffmpeg started %d more times after the end", n-before)
	}
}

// TestCloseCutsTheEndingFlushShort: when the shutdown grace runs out, an
// ending session stops waiting for its name and lets its audio go.
func TestCloseCutsTheEndingFlushShort(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.NameHeld, nil)
	defer fakeffmpeg.HoldName(dir, "abc")()
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 5, 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want the grace to run out", err)
	}
	if got := received(t, dir, "abc"); len(got) != 0 {
		t.Fatalf("%d ffmpeg runs published with the name held", len(got))
	}
}

func TestStalledOutputRestartsFFmpeg(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Stall, func(c *Config) { c.StallTimeout = 300 * time.Millisecond })
	stop := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(stop); i++ {
		if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 2, byte(i))); err != nil && !errors.Is(err, ErrBufferFull) {
			t.Fatal(err)
		}
		if info, _ := r.Info("abc"); info.Restarts > 0 {
			if !strings.Contains(info.LastError, "has not advanced") {
				t.Errorf("last error %q", info.LastError)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("a stalled ffmpeg was not restarted")
}

// An ffmpeg that is slow to publish (a busy machine) is not a stalled
// one: the stall clock starts at the publish.
func TestSlowStartIsNotAStall(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.SlowStart, func(c *Config) { c.StallTimeout = 300 * time.Millisecond })
	var sent []byte
	for i := 0; i < 200; i++ { // 4 s: the fake publishes at 1.5 s and outputs from 2.5 s
		data := frames(hdrV2Mono, 2, byte(i))
		if _, err := r.Write(context.Background(), "abc", testSrc, data); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, data...)
		time.Sleep(20 * time.Millisecond)
	}
	if info, _ := r.Info("abc"); info.Restarts != 0 {
		t.Fatalf("restarted %d times: %s", info.Restarts, info.LastError)
	}
	closeRegistry(t, r)
	if got := received(t, dir, "abc"); len(got) != 1 || !bytes.Equal(got[0], sent) {
		t.Fatalf("ffmpeg received %d outputs, not the %d bytes sent", len(got), len(sent))
	}
}

func TestGapFillFeedsSilenceInTheStreamsFormat(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.GapFill = 200 * time.Millisecond })
	audio := frames(hdrV25Mono, 3, 0x55) // 216 ms of 8 kHz mono
	if _, err := r.Write(context.Background(), "abc", testSrc, audio); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a second of silence", func() bool { info, _ := r.Info("abc"); return info.Silence >= 1 })
	closeRegistry(t, r)
	got := received(t, dir, "abc")[0]
	if !bytes.HasPrefix(got, audio) {
		t.Fatal("the client's audio is not first")
	}
	rest := got[len(audio):]
	silent := silentFrame(mustParse(hdrV25Mono))
	if len(rest) == 0 || len(rest)%len(silent) != 0 || !bytes.Equal(rest[:len(silent)], silent) {
		t.Fatalf("after the audio: %d bytes, not silent frames of %d", len(rest), len(silent))
	}
	if h := mustParse(silent); !sameStream(h, mustParse(hdrV25Mono)) {
		t.Errorf("silence format %+v", h)
	}
}

// TestNoGapFillWhileTheClientWaitsForThePublish: a client whose first
// POST is answered only once ffmpeg publishes sends nothing meanwhile;
// on a busy machine that wait outlasts GapFill, and silence fed then
// would delay the whole stream.
func TestNoGapFillWhileTheClientWaitsForThePublish(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.SlowStart, func(c *Config) { c.GapFill = time.Second })
	start := time.Now()
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV25Mono, 3, 1)); err != nil { // 216 ms
		t.Fatal(err)
	}
	// The fake publishes after 1.5 s: a gap of 1.3 s behind the clock.
	waitFor(t, "the publish", func() bool { info, _ := r.Info("abc"); return info.FFmpeg == "publishing" })
	// The answer comes, and the client sends what fell due meanwhile.
	due := int(time.Since(start)/(72*time.Millisecond)) - 3 + 1
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV25Mono, due, 2)); err != nil {
		t.Fatal(err)
	}
	if info, _ := r.Info("abc"); info.Silence != 0 {
		t.Errorf("%.2f s of silence fed while the client waited for the publish", info.Silence)
	}
	// Quiet from now on: silence follows once GapFill has passed.
	waitFor(t, "silence once the client is quiet", func() bool { info, _ := r.Info("abc"); return info.Silence > 0 })
	closeRegistry(t, r)
}

// TestInfoReportsFFmpegOutput: output_seconds follows ffmpeg's progress
// reports (the fake reports the end of the last MP3 frame it passed on).
func TestInfoReportsFFmpegOutput(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, nil)
	audio := frames(hdrV2Mono, 10, 1)
	if _, err := r.Write(context.Background(), "abc", testSrc, audio); err != nil {
		t.Fatal(err)
	}
	want := (360 * time.Millisecond).Seconds() // 10 frames of 36 ms
	waitFor(t, "the output reported", func() bool { info, _ := r.Info("abc"); return info.Output == want })
	closeRegistry(t, r)
}

// TestNoGapFillWhileDraining: behind a load balancer, a stream that goes
// quiet on a draining server has moved; silence at the end of its old
// publish would play between its audio here and there.
func TestNoGapFillWhileDraining(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.GapFill = 200 * time.Millisecond })
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV25Mono, 3, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the publish", func() bool { info, _ := r.Info("abc"); return info.FFmpeg == "publishing" })
	if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV25Mono, 3, 2)); err != nil {
		t.Fatal(err)
	}
	r.Drain()
	// Past the first check (1 s after the start: fill begins there), within
	// drainIdle of the last write (1.5 s; checked at 2 s).
	time.Sleep(1300 * time.Millisecond)
	info, ok := r.Info("abc")
	if !ok {
		t.Fatal("the stream ended before drainIdle")
	}
	if info.Silence != 0 {
		t.Errorf("%.2f s of silence fed while draining", info.Silence)
	}
	closeRegistry(t, r)
}

func TestFormatChangeStartsANewFFmpeg(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
	mono16 := frames(hdrV2Mono, 10, 1)
	stereo44 := frames(hdrV1Stereo, 10, 2)
	if _, err := r.Write(context.Background(), "abc", testSrc, mono16); err != nil {
		t.Fatal(err)
	}
	// A recorder restarted with other settings: a new file, ID3 and all.
	next := append(id3v2(40), stereo44...)
	if _, err := r.Write(context.Background(), "abc", testSrc, next); err != nil {
		t.Fatal(err)
	}
	closeRegistry(t, r)
	got := received(t, dir, "abc")
	if len(got) != 2 || !bytes.Equal(got[0], mono16) || !bytes.Equal(got[1], stereo44) {
		t.Fatalf("want one ffmpeg per format; got %d runs", len(got))
	}
}
