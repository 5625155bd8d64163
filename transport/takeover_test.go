package transport

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/internal/whipclient"
	"ffmpeg-publisher/session"
)

// With -takeover a client that reconnects while its old connection still
// holds the ID (a phone that changed networks: to the server the old
// socket looks alive, and quiet) is taken once the old one has sent
// nothing for a second. The old connection is closed with 1008 naming its
// replacement, the stream goes on in the same ffmpeg, and a POST still
// waits its turn (409).
func TestTakeoverWebSocket(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, func(_ *Config, c *session.Config) { c.Takeover = true })
	old := dialWSWrite(t, ts, "id=tk&key=k", mp3(3, 1))
	waitBytes(t, ts, "tk", int64(len(mp3(3, 1))))

	code, r := do(t, "POST", ts.URL+"/base64?key=k&id=tk", strings.NewReader(base64.StdEncoding.EncodeToString(mp3(2, 9))))
	if code != 409 || !strings.Contains(r.Errmsg, "already has a publisher") {
		t.Errorf("a POST while a connection holds the ID: %d %+v", code, r)
	}

	time.Sleep(1100 * time.Millisecond) // the old connection is quiet
	replacement := dialWSWrite(t, ts, "id=tk&key=k", mp3(3, 2))
	_, ce := readUntilClose(t, old)
	if ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "replaced by a new connection") {
		t.Fatalf("the old connection's close: %d %q", ce.Code, ce.Text)
	}
	waitBytes(t, ts, "tk", int64(2*len(mp3(3, 1))))
	replacement.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	if got, want := ts.received(t, "tk"), append(mp3(3, 1), mp3(3, 2)...); !bytes.Equal(got, want) {
		t.Errorf("ffmpeg read %d bytes, want both connections' %d in order", len(got), len(want))
	}
	if n := len(fakeffmpeg.OutputFiles(ts.dir, "tk")); n != 1 {
		t.Errorf("%d ffmpeg runs, want one", n)
	}
}

// An upload replaced by a WebSocket is answered 409 with the reason and
// what it delivered; without -takeover the newcomer is the one refused.
func TestTakeoverUpload(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, func(_ *Config, c *session.Config) { c.Takeover = true })
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan legacyReply, 1)
	codes := make(chan int, 1)
	go func() {
		code, r := do(t, "POST", ts.URL+"/live/up?key=k", pr)
		codes <- code
		done <- r
	}()
	pw.Write(mp3(3, 1))
	waitBytes(t, ts, "up", int64(len(mp3(3, 1))))
	time.Sleep(1100 * time.Millisecond) // the upload is quiet
	dialWSWrite(t, ts, "id=up&key=k", mp3(3, 2))
	select {
	case code := <-codes:
		if r := <-done; code != 409 || !strings.Contains(r.Errmsg, "replaced by a new connection for this live id (websocket from 127.0.0.1:") {
			t.Errorf("the replaced upload: %d %+v", code, r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced upload was not answered")
	}

	off := newServer(t, fakeffmpeg.Normal, nil)
	dialWSWrite(t, off, "id=held&key=k", mp3(3, 1))
	if _, ce := readUntilClose(t, dialWS(t, off, "id=held&key=k", nil)); ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "already has a publisher") {
		t.Errorf("a newcomer without -takeover: %d %q", ce.Code, ce.Text)
	}
}

// waitBytes waits until id's stream has taken at least n bytes.
func waitBytes(t *testing.T, ts *testServer, id string, n int64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if info, ok := ts.reg.Info(id); ok && info.Bytes >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach %d bytes", id, n)
		}
	}
}

// A WHIP offer that passes the first check but that the WebRTC stack then
// rejects (here, without a=mid) is refused before it could take anything:
// a quiet WHIP holder keeps its session.
func TestTakeoverNotByABadWHIPOffer(t *testing.T) {
	ts := whipServer(t, func(_ *Config, c *session.Config) { c.Takeover = true })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, err := whipclient.Publish(ctx, ts.URL+"/whip/bad", "k")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.Send(ctx, [][]byte{{0xF8, 1, 2}, {0xF8, 1, 2}, {0xF8, 1, 2}}, whipclient.Impair{}); err != nil {
		t.Fatal(err)
	}
	for !live(ts, "bad") {
		time.Sleep(20 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("no stream")
		}
	}
	time.Sleep(1100 * time.Millisecond) // the holder is quiet
	var kept []string
	for _, line := range strings.Split(offer(t, opusCodec), "\r\n") {
		if !strings.HasPrefix(line, "a=mid:") && !strings.HasPrefix(line, "a=group:BUNDLE") {
			kept = append(kept, line)
		}
	}
	if resp := postOffer(t, ts, "bad", strings.Join(kept, "\r\n")); resp.StatusCode/100 != 4 {
		t.Fatalf("an offer without a=mid: %d, want a 4xx", resp.StatusCode)
	}
	// The holder still writes: its next packets reach the stream.
	before, _ := ts.reg.Info("bad")
	if _, err := holder.Send(ctx, [][]byte{{0xF8, 1, 2}, {0xF8, 1, 2}, {0xF8, 1, 2}}, whipclient.Impair{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if info, _ := ts.reg.Info("bad"); info.Bytes > before.Bytes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder's audio no longer reaches the stream after a bad offer")
		}
	}
}
