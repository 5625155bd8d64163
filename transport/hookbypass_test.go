package transport

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"ffmpeg-publisher/hooks"
	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
)

// countingHook allows every stream, renaming it so that a stream started
// without it shows, and counts the calls per ID.
type countingHook struct {
	mu    sync.Mutex
	calls map[string]int
}

func (h *countingHook) Publish(_ context.Context, req hooks.Publish) (*session.Overrides, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls[req.ID]++
	return &session.Overrides{Name: req.ID + "-approved"}, nil
}

func (h *countingHook) Revoked(string) error { return nil }

func (h *countingHook) count(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[id]
}

// Every stream starts through on_publish, also one a connection starts
// after the stream it joined (or began) has ended: the application's
// output and name apply to it, and the application hears of it.
func TestHookAskedForEveryNewStream(t *testing.T) {
	for _, joins := range []bool{true, false} {
		name := "websocket started the stream"
		if joins {
			name = "websocket joined a live stream"
		}
		t.Run(name, func(t *testing.T) {
			hook := &countingHook{calls: map[string]int{}}
			ts := newServer(t, fakeffmpeg.Normal, func(c *Config, _ *session.Config) { c.Hooks = hook })
			const id = "room"
			var c *websocket.Conn
			if joins {
				if code := postTyped(t, ts.URL+"/chunk?key=k&id="+id, "audio/mpeg", string(mp3(3, 1))); code != http.StatusOK {
					t.Fatalf("first POST: %d", code)
				}
				c = dialWS(t, ts, "key=k&id="+id, nil)
				readStatus(t, c)
			} else {
				c = dialWSWrite(t, ts, "key=k&id="+id, mp3(3, 1))
				waitSession(t, ts, id, true)
			}
			if n := hook.count(id); n != 1 {
				t.Fatalf("on_publish asked %d times for the first stream", n)
			}
			ts.reg.End(id, session.CauseIdle) // as the idle timeout would, with the connection quiet
			waitSession(t, ts, id, false)
			c.WriteMessage(websocket.BinaryMessage, mp3(3, 2)) // a second stream starts
			waitSession(t, ts, id, true)
			if n := hook.count(id); n != 2 {
				t.Errorf("on_publish asked %d times for two streams", n)
			}
		})
	}
}
