package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// prestarted attaches a WebSocket publisher to id and prestarts its
// stream; it returns the publisher and the prestarted ffmpeg's pid.
func prestarted(t *testing.T, r *Registry, id string) (*Publisher, int) {
	t.Helper()
	pub, err := r.Attach(id, Source{Transport: "websocket"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Prestart(context.Background()); err != nil {
		t.Fatal(err)
	}
	info, ok := r.Info(id)
	if !ok || info.PID == 0 {
		t.Fatalf("no ffmpeg after Prestart: %+v", info)
	}
	return pub, info.PID
}

func reaped(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return os.IsNotExist(err)
}

// A first chunk that is not in the stream's format ends a prestarted
// stream as it ends one started by that chunk: not_mp3, and its ffmpeg,
// which never got a byte, is stopped.
func TestPrestartedStreamRefusesABadFirstChunk(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Prestart = true })
	pub, pid := prestarted(t, r, "abc")
	if _, err := pub.Write(context.Background(), []byte("OggS, not MP3 at all, and long enough to be judged")); !errors.Is(err, ErrNotMP3) {
		t.Fatalf("bad first chunk: %v, want ErrNotMP3", err)
	}
	waitFor(t, "the session to end", func() bool { _, ok := r.Info("abc"); return !ok })
	waitFor(t, "the prestarted ffmpeg to be reaped", func() bool { return reaped(pid) })
	pub.Detach(false)
	for _, f := range fakeffmpeg.OutputFiles(dir, "abc") {
		if b, _ := os.ReadFile(f); len(b) > 0 {
			t.Errorf("%s: the prestarted ffmpeg got %d bytes", f, len(b))
		}
	}
}

// A prestarted ffmpeg that gets no audio within PrestartWait is stopped;
// the stream's first audio then starts another, which gets all of it.
func TestPrestartWaitStopsTheIdleFFmpeg(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) {
		c.Prestart = true
		c.PrestartWait = 100 * time.Millisecond
	})
	pub, pid := prestarted(t, r, "abc")
	waitFor(t, "the prestarted ffmpeg to be reaped", func() bool { return reaped(pid) })
	// Its stream ended with it: a silent connection holds no slot.
	waitFor(t, "the stream to end", func() bool { _, ok := r.Info("abc"); return !ok && r.Len() == 0 })
	if n := r.waiting.Load(); n != 0 {
		t.Errorf("%d streams counted as waiting for audio, want 0", n)
	}
	a := frames(hdrV2Mono, 20, 1)
	if _, err := pub.Write(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	pub.Detach(true)
	closeRegistry(t, r)
	var got int
	for _, f := range fakeffmpeg.OutputFiles(dir, "abc") {
		b, _ := os.ReadFile(f)
		got += len(b)
	}
	if got < len(a) {
		t.Errorf("the ffmpegs got %d bytes of the %d written", got, len(a))
	}
}

// A connection that leaves before its first audio takes its prestarted
// stream along at once.
func TestPrestartedStreamEndsWithItsConnection(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Prestart = true })
	pub, pid := prestarted(t, r, "abc")
	pub.Detach(false)
	waitFor(t, "the session to end", func() bool { _, ok := r.Info("abc"); return !ok })
	waitFor(t, "the prestarted ffmpeg to be reaped", func() bool { return reaped(pid) })
}

// A prestarted ffmpeg that has loaded and waits for its client is not a
// start in progress for admission control; once given audio it is a stream
// like any other.
func TestPrestartedFFmpegWaitingIsNoStart(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Prestart = true })
	pub, _ := prestarted(t, r, "abc")
	waiting := func() bool { l := r.Loads(nil); return len(l) == 1 && l[0].Waiting }
	waitFor(t, "the prestarted ffmpeg to load and wait", waiting)
	if _, err := pub.Write(context.Background(), frames(hdrV2Mono, 4, 1)); err != nil {
		t.Fatal(err)
	}
	if waiting() {
		t.Error("still waiting after its first audio")
	}
	pub.Detach(true)
	closeRegistry(t, r)
}

// Past prestartBudget silent connections, a connection gets no ffmpeg
// before its audio: they cannot hold ffmpegs and -max-sessions slots.
func TestPrestartBudget(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Prestart = true })
	var pubs []*Publisher
	for i := 0; i <= prestartBudget; i++ {
		pub, err := r.Attach(fmt.Sprintf("s%d", i), Source{Transport: "websocket"})
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Prestart(context.Background()); err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, pub)
	}
	if n := r.Len(); n != prestartBudget {
		t.Errorf("%d streams started for %d silent connections, want %d", n, len(pubs), prestartBudget)
	}
	last := pubs[len(pubs)-1]
	if _, ok := r.Info(last.id); ok {
		t.Errorf("the connection past the budget got a stream before its audio")
	}
	// Audio frees a place in the budget; the next silent connection gets one.
	if _, err := pubs[0].Write(context.Background(), frames(hdrV2Mono, 4, 1)); err != nil {
		t.Fatal(err)
	}
	if err := last.Prestart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Info(last.id); !ok {
		t.Errorf("no stream before its audio once the budget had room")
	}
	for _, p := range pubs {
		p.Detach(true)
	}
	closeRegistry(t, r)
}

// A write that meets its stream just asked to end (PrestartWait ran out,
// an idle end, end=1) goes to the stream's successor; it is not refused
// as a shutdown.
func TestWriteRightAfterAnEndStartsTheNextStream(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Prestart = true })
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("e%d", i)
		pub, _ := prestarted(t, r, id)
		r.mu.Lock()
		s := r.sessions[id]
		r.mu.Unlock()
		s.requestEnd(CauseIdle, "no audio within the test's wait")
		if _, err := pub.Write(context.Background(), frames(hdrV2Mono, 4, 1)); err != nil {
			t.Fatalf("write right after the end: %v", err)
		}
		r.mu.Lock()
		next := r.sessions[id]
		r.mu.Unlock()
		if next == nil || next == s {
			t.Fatalf("the write went to no new stream")
		}
		pub.Detach(true)
	}
	closeRegistry(t, r)
}

// A prestarted ffmpeg that never got audio leaves no empty recording.
func TestPrestartedSilentStreamLeavesNoRecording(t *testing.T) {
	records := t.TempDir()
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Prestart = true; c.RecordDir = records })
	pub, pid := prestarted(t, r, "abc")
	if files, _ := os.ReadDir(records); len(files) != 1 {
		t.Fatalf("%d files in the record directory at the start, want its recording", len(files))
	}
	pub.Detach(false) // left before its first audio
	waitFor(t, "the prestarted ffmpeg to be reaped", func() bool { return reaped(pid) })
	waitFor(t, "the stream to end", func() bool { return r.Len() == 0 })
	closeRegistry(t, r)
	if files, _ := os.ReadDir(records); len(files) != 0 {
		t.Errorf("left behind: %v", files)
	}
}

// A prestarted ffmpeg that dies before any audio ends its stream at the
// next check, giving its place in the prestart budget back.
func TestPrestartedFFmpegDyingEndsTheSilentStream(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Prestart = true })
	pub, pid := prestarted(t, r, "abc")
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "the stream to end", func() bool { return r.Len() == 0 && r.waiting.Load() == 0 })
	pub.Detach(true)
	closeRegistry(t, r)
}

// Connections that arrive together cannot overshoot the budget: each
// prestarted ffmpeg takes its slot atomically.
func TestPrestartBudgetUnderAHerd(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Prestart = true })
	const herd = 3 * prestartBudget
	pubs := make([]*Publisher, herd)
	var wg sync.WaitGroup
	for i := range herd {
		pub, err := r.Attach(fmt.Sprintf("h%d", i), Source{Transport: "websocket"})
		if err != nil {
			t.Fatal(err)
		}
		pubs[i] = pub
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pub.Prestart(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := r.waiting.Load(); n > prestartBudget {
		t.Errorf("%d prestarted ffmpegs wait for audio, the budget is %d", n, prestartBudget)
	}
	for _, p := range pubs {
		p.Detach(true)
	}
	closeRegistry(t, r)
	if n := r.waiting.Load(); n != 0 {
		t.Errorf("%d slots still taken after every stream ended", n)
	}
}
