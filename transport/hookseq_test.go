package transport

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/hooks"
	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"
)

// ticketHook is an application whose tickets are good for one stream: it
// allows the first on_publish of an ID and refuses every later one.
type ticketHook struct {
	mu    sync.Mutex
	calls map[string]int
}

func (h *ticketHook) Publish(_ context.Context, req hooks.Publish) (*session.Overrides, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls[req.ID]++
	if h.calls[req.ID] > 1 {
		return nil, &hooks.Refusal{Status: http.StatusForbidden, Message: "this ticket was used"}
	}
	return nil, nil
}

func (h *ticketHook) Revoked(string) error { return nil }

func (h *ticketHook) count(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[id]
}

// A retried end=1, or a retried chunk of a stream its client ended, is a
// duplicate (200) without asking on_publish, whose one-use ticket it
// would not pass, and without counting as a new stream of the client.
func TestHookNotAskedForARetryOfAnEndedStream(t *testing.T) {
	hook := &ticketHook{calls: map[string]int{}}
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		c.Hooks = hook
		c.RateSessions = 0.001      // a burst of 5 new streams, then 429s
		s.IdleTimeout = time.Minute // the end's record outlives a slow run of the other streams
	})
	var want []byte
	postAll(t, ts, "fin", 0, 1, &want)
	if code, m := seqPost(t, ts, "id=fin&seq=2&end=1", seqChunk(2)); code != 200 || m["duplicate"] != nil {
		t.Fatalf("seq 2 end=1: %d %v", code, m)
	}
	want = append(want, seqChunk(2)...)
	waitGone(t, ts, "fin")
	for _, id := range []string{"a", "b", "c", "d"} { // the client's other new streams use up its burst
		if code, m := seqPost(t, ts, "id="+id+"&seq=0", seqChunk(1)); code != 200 {
			t.Fatalf("stream %s: %d %v", id, code, m)
		}
	}
	for _, n := range []string{"2&end=1", "1"} {
		if code, m := seqPost(t, ts, "id=fin&seq="+n, seqChunk(int(n[0]-'0'))); code != 200 || m["duplicate"] != true {
			t.Errorf("retried seq %s of the ended stream: %d %v, want 200 duplicate", n, code, m)
		}
	}
	if n := hook.count("fin"); n != 1 {
		t.Errorf("on_publish asked %d times for one stream", n)
	}
	if _, live := ts.reg.Info("fin"); live {
		t.Errorf("a retry opened a session")
	}
	// A new chunk is a new stream: refused (the rate, then the ticket).
	if code, m := seqPost(t, ts, "id=fin&seq=0", seqChunk(7)); code != 429 {
		t.Errorf("new stream after the end: %d %v, want 429", code, m)
	}
}
