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
		FlushGrace:   2 * time.Second,
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
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
	got := received(t, dir, "abc")
	if len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Fatalf("ffmpeg runs: %d; want one run that read all %d bytes in order", len(got), len(want))
	}
}

func TestConcurrentWritesNeverInterleave(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
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
	res, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 4, 1))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v", err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(res.Total.PID)); err == nil {
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
		r, _ := newTestRegistry(t, fakeffmpeg.Fail, nil)
		_, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 2, 1))
		var ue *UpstreamError
		if !errors.As(err, &ue) || !strings.Contains(ue.Reason, "Connection refused") {
			t.Fatalf("err = %v, want the connection error ffmpeg printed", err)
		}
		waitGone(t, r, "abc")
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
		pub, err := r.Attach("abc", Source{"websocket", "192.0.2.1:5000"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Attach("abc", Source{"websocket", "x"}); !errors.Is(err, ErrBusy) {
			t.Fatalf("second publisher: %v", err)
		}
		if _, err := r.Write(context.Background(), "abc", testSrc, frames(hdrV2Mono, 2, 1)); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "192.0.2.1") {
			t.Fatalf("POST during a publisher: %v", err)
		}
		if _, err := pub.Write(context.Background(), frames(hdrV2Mono, 2, 1)); err != nil {
			t.Fatal(err)
		}
		pub.Detach(false) // a dropped connection: the session waits
		pub2, err := r.Attach("abc", Source{"websocket", "x"})
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
