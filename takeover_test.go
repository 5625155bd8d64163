package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"ffmpeg-publisher/hooks"
	"ffmpeg-publisher/internal/rtmptest"
)

// takeoverDial opens a WebSocket for id with query, and returns it after
// the server's "ready"; refused is the close the server sent instead.
func takeoverDial(t *testing.T, p *publisher, query string) (c *websocket.Conn, refused *websocket.CloseError) {
	t.Helper()
	hdr := http.Header{"Origin": {p.URL}}
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.URL, "http")+"/ws?"+query, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, msg, err := conn.ReadMessage()
		if ce, ok := err.(*websocket.CloseError); ok {
			return nil, ce
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(msg), `"type":"ready"`) {
			return conn, nil
		}
	}
}

// closedWith waits for the server to close c, and returns its close.
func closedWith(t *testing.T, c *websocket.Conn) *websocket.CloseError {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			ce, _ := err.(*websocket.CloseError)
			if ce == nil {
				t.Fatalf("ended without a close frame: %v", err)
			}
			return ce
		}
	}
}

// Takeover against real ffmpeg and nginx-rtmp, with -hook-only (the hook
// is the only credential): a connection that streams is never replaced;
// once it is quiet (a phone that lost its network looks so), a newcomer
// the application approves takes the stream over, in the same publish,
// and one it refuses gets nowhere and leaves the holder alone.
func TestTakeoverOnlyQuietAndApproved(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	app := startAppHook(t)
	app.set(func(h *appHook) {
		h.publish = func(p hooks.Publish) (int, string) {
			if p.Query["ticket"] != "good" {
				return 403, "no ticket"
			}
			return 200, ""
		}
	})
	p := startPublisher(t, rtmp.URL, withHooks(app, func(c *Config) { c.HookOnly, c.IdleTimeout = true, 20*time.Second }))
	const id = "tk"
	audio := splitEvery(rtmptest.MP3(t, 6.048, 16000, 1, "32k", true), 14*144) // 504 ms pieces
	holder, ce := takeoverDial(t, p, "id="+id+"&ticket=good")
	if ce != nil {
		t.Fatalf("the holder: %v", ce)
	}
	// While the holder streams, a newcomer with a good ticket is busy.
	for i := range 4 {
		if err := holder.WriteMessage(websocket.BinaryMessage, audio[i]); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			if _, ce := takeoverDial(t, p, "id="+id+"&ticket=good"); ce == nil || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "already has a publisher") {
				t.Errorf("a newcomer while the holder streams: %v, want 1008 busy", ce)
			}
		}
		time.Sleep(504 * time.Millisecond) // real time: the holder streams
	}
	calls := len(app.publishCalls())
	// The holder goes quiet. Without a ticket the application refuses.
	time.Sleep(1200 * time.Millisecond)
	if _, ce := takeoverDial(t, p, "id="+id); ce == nil || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "no ticket") {
		t.Errorf("a newcomer without a ticket: %v, want the hook's refusal", ce)
	}
	if all := app.publishCalls(); len(all) != calls+1 || !all[calls].Takeover || all[0].Takeover {
		t.Errorf("on_publish calls %+v: want the stream's, then one for the refused takeover saying so", all)
	}
	// With one, it takes the stream: the holder hears why, and the rest of
	// the audio continues the same publish.
	newcomer, ce := takeoverDial(t, p, "id="+id+"&ticket=good")
	if ce != nil {
		t.Fatalf("an approved newcomer after the holder went quiet: %v", ce)
	}
	if ce := closedWith(t, holder); ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "replaced by a new connection") {
		t.Errorf("the holder's close: %d %q", ce.Code, ce.Text)
	}
	paced(len(audio)-4, 504*time.Millisecond, func(i int) {
		if err := newcomer.WriteMessage(websocket.BinaryMessage, audio[4+i]); err != nil {
			t.Errorf("piece %d: %v", 4+i, err)
		}
	})
	newcomer.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	closedWith(t, newcomer)
	rec := rtmp.WaitRecorded(t, id, 1)
	silence := p.silence(t, id)
	if n := rtmp.PublishCount(id); n != 1 {
		t.Errorf("%d publishes, want one", n)
	}
	if want := 6.048 + silence.Seconds(); rec.Duration < want*0.95 || rec.Duration > want*1.05 {
		t.Errorf("recorded %.3f s, want 6.048 s of audio and %.2f s of silence", rec.Duration, silence.Seconds())
	}
}
