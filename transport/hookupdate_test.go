package transport

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/hooks"
	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"

	"github.com/sirupsen/logrus"
)

// An on_update refusal revokes the stream it was asked about, not its ID:
// one that comes back after that stream ended and a new stream took the
// ID leaves the new stream and its client alone.
func TestHookUpdateRefusalOfAnEndedStreamSparesTheNext(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		first := false
		once.Do(func() { first = true })
		if !first {
			<-r.Context().Done() // later calls get no answer before the end of the test
			return
		}
		close(held)
		select { // the first stream's call: answered once the test says
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "no longer allowed")
	}))
	defer app.Close()
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	defer free()
	log := logrus.New()
	log.SetOutput(io.Discard)
	obs := answeredObserver(make(chan struct{}, 1))
	h := hooks.New(hooks.Config{OnUpdate: app.URL, Interval: 20 * time.Millisecond, Timeout: time.Minute, Observer: obs},
		logrus.NewEntry(log))
	closed := false
	closeHooks := func() {
		if !closed {
			closed = true
			h.Close(context.Background())
		}
	}
	defer closeHooks()
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) { c.Hooks, s.Watcher = h, h })

	const id = "room"
	if code := postTyped(t, ts.URL+"/chunk?key=k&id="+id, "audio/mpeg", string(mp3(3, 1))); code != http.StatusOK {
		t.Fatalf("first stream: %d", code)
	}
	<-held // the first stream's on_update call is in flight
	ts.reg.End(id, session.CauseClient)
	waitSession(t, ts, id, false)
	if code := postTyped(t, ts.URL+"/chunk?key=k&id="+id, "audio/mpeg", string(mp3(3, 2))); code != http.StatusOK {
		t.Fatalf("second stream: %d", code)
	}
	free() // the hook refuses the first stream now
	select {
	case <-obs:
	case <-time.After(10 * time.Second):
		t.Fatal("the held on_update call was not answered")
	}
	closeHooks() // returns once the refusal was handled
	if err := h.Revoked(id); err != nil {
		t.Errorf("the ID is revoked after its ended stream was refused: %v", err)
	}
	if code := postTyped(t, ts.URL+"/chunk?key=k&id="+id, "audio/mpeg", string(mp3(3, 3))); code != http.StatusOK {
		t.Errorf("the second stream's next POST: %d, want 200", code)
	}
	if info, live := ts.reg.Info(id); !live || info.State == session.StateEnding || info.State == session.StateEnded {
		t.Errorf("the second stream was ended: %+v", info)
	}
}

// answeredObserver tells of each hook call that was answered.
type answeredObserver chan struct{}

func (o answeredObserver) HookCalled(_ string, _ time.Duration, answered bool) {
	if answered {
		select {
		case o <- struct{}{}:
		default:
		}
	}
}

func (answeredObserver) HookDropped(string, string) {}
