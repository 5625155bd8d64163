package transport

import (
	"context"
	"encoding/base64"
	"io"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
)

// DELETE /streams/ID removes a publisher: its WebSocket or upload is closed,
// nothing it sends afterwards starts a new session or publish, and with
// ?block= the ID is refused for everyone for that long.

func kickServer(t *testing.T) *testServer {
	return newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		c.Key = "k"
		c.TokenSecret = secret
		c.AdminKey = "admin"
	})
}

// waitSession waits until id's session has taken bytes (live) or is gone.
func waitSession(t *testing.T, ts *testServer, id string, live bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		info, ok := ts.reg.Info(id)
		if (live && ok && info.Bytes > 0) || (!live && !ok) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: session live=%v never came", id, live)
		}
	}
}

// ffmpegRuns is how many fake ffmpegs were started for id (each is a
// publish); call after the server has shut down.
func ffmpegRuns(ts *testServer, id string) int { return len(fakeffmpeg.OutputFiles(ts.dir, id)) }

func TestDeleteClosesTheWebSocket(t *testing.T) {
	ts := kickServer(t)
	c := dialWS(t, ts, "id=ws1&key=k", nil)
	readStatus(t, c) // ready
	if err := c.WriteMessage(websocket.BinaryMessage, mp3(10, 1)); err != nil {
		t.Fatal(err)
	}
	waitSession(t, ts, "ws1", true)
	if code, m := adminDo(t, "DELETE", ts.URL+"/streams/ws1", "admin"); code != 200 || m["blocked_until"] != nil {
		t.Fatalf("DELETE: %d %v", code, m)
	}
	// The client keeps sending, as a client that missed the close would.
	c.WriteMessage(websocket.BinaryMessage, mp3(10, 2))
	_, ce := readUntilClose(t, c)
	if ce.Code != websocket.ClosePolicyViolation || ce.Text != "ended by the operator" {
		t.Errorf("close %d %q, want 1008 \"ended by the operator\"", ce.Code, ce.Text)
	}
	waitSession(t, ts, "ws1", false)
	// Without a block the ID is free again: a new connection is a new stream.
	c2 := dialWS(t, ts, "id=ws1&key=k", nil)
	if m := readStatus(t, c2); m["type"] != "ready" {
		t.Errorf("reconnect after DELETE: %v", m)
	}
	c2.Close()
	ts.shutdown(t)
	if n := ffmpegRuns(ts, "ws1"); n != 1 {
		t.Errorf("ws1: %d ffmpeg runs, want 1: the kicked connection's later message started another", n)
	}
}

func TestDeleteEndsTheUpload(t *testing.T) {
	ts := kickServer(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	type result struct {
		code int
		r    legacyReply
	}
	done := make(chan result, 1)
	go func() {
		code, r := do(t, "POST", ts.URL+"/live/up1?key=k", pr)
		done <- result{code, r}
	}()
	pw.Write(mp3(10, 1))
	waitSession(t, ts, "up1", true)
	if code, m := adminDo(t, "DELETE", ts.URL+"/streams/up1", "admin"); code != 200 {
		t.Fatalf("DELETE: %d %v", code, m)
	}
	// The upload ends with its documented status while its client still
	// holds the body open.
	select {
	case res := <-done:
		if res.code != 403 || res.r.Errmsg != "ended by the operator" || res.r.Bytes != 10*144 {
			t.Errorf("upload reply: %d %+v, want 403 \"ended by the operator\" with the bytes accepted", res.code, res.r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upload was not ended by DELETE")
	}
	waitSession(t, ts, "up1", false)
	ts.shutdown(t)
	if n := ffmpegRuns(ts, "up1"); n != 1 {
		t.Errorf("up1: %d ffmpeg runs, want 1", n)
	}
}

func TestDeleteWithBlockRefusesTheID(t *testing.T) {
	ts := kickServer(t)
	c := dialWS(t, ts, "id=bl&key=k", nil)
	readStatus(t, c)
	c.WriteMessage(websocket.BinaryMessage, mp3(10, 1))
	waitSession(t, ts, "bl", true)

	// Only the admin key may block; the duration is checked.
	if code, m := adminDo(t, "DELETE", ts.URL+"/streams/bl?key=k&block=10m", ""); code != 403 || m["errmsg"] != "blocking a live id takes the admin key" {
		t.Errorf("block with the publish key: %d %v", code, m)
	}
	for _, bad := range []string{"0s", "-1m", "soon", "9000h"} {
		if code, _ := adminDo(t, "DELETE", ts.URL+"/streams/bl?block="+bad, "admin"); code != 400 {
			t.Errorf("block=%s: %d, want 400", bad, code)
		}
	}
	if _, live := ts.reg.Info("bl"); !live {
		t.Fatal("a refused DELETE ended the stream")
	}
	code, m := adminDo(t, "DELETE", ts.URL+"/streams/bl?block=10m", "admin")
	until, err := time.Parse(time.RFC3339, strOf(m["blocked_until"]))
	if code != 200 || err != nil || until.Before(time.Now().Add(9*time.Minute)) {
		t.Fatalf("DELETE ?block=10m: %d %v", code, m)
	}
	if _, ce := readUntilClose(t, c); ce.Code != websocket.ClosePolicyViolation || ce.Text != "ended by the operator" {
		t.Errorf("close %d %q", ce.Code, ce.Text)
	}
	waitSession(t, ts, "bl", false)

	// Every way back in is refused, key or token.
	want := "this live id is blocked by the operator until " + until.UTC().Format(time.RFC3339)
	tok, _ := MintToken(secret, "bl", time.Now().Add(time.Hour))
	chunk := base64.StdEncoding.EncodeToString(mp3(3, 2))
	for _, q := range []string{"key=k", "token=" + tok} {
		if code, r := do(t, "POST", ts.URL+"/base64?id=bl&"+q, strings.NewReader(chunk)); code != 403 || r.Errmsg != want {
			t.Errorf("POST /base64 with %s: %d %q, want 403 %q", q[:3], code, r.Errmsg, want)
		}
		if code, r := do(t, "PUT", ts.URL+"/live/bl?"+q, strings.NewReader(string(mp3(3, 2)))); code != 403 || r.Errmsg != want {
			t.Errorf("PUT /live with %s: %d %q", q[:3], code, r.Errmsg)
		}
		ws := dialWS(t, ts, "id=bl&"+q, nil)
		if _, ce := readUntilClose(t, ws); ce.Code != websocket.ClosePolicyViolation || ce.Text != want {
			t.Errorf("WebSocket with %s: close %d %q", q[:3], ce.Code, ce.Text)
		}
	}
	// Other IDs are not affected; a block with nothing live still answers 200.
	if code, r := do(t, "POST", ts.URL+"/base64?id=other&key=k", strings.NewReader(chunk)); code != 200 {
		t.Errorf("another ID: %d %+v", code, r)
	}
	if code, m := adminDo(t, "DELETE", ts.URL+"/streams/idle1?block=1m", "admin"); code != 200 || m["blocked_until"] == nil {
		t.Errorf("block of an ID with no stream: %d %v", code, m)
	}
	if code, _ := adminDo(t, "DELETE", ts.URL+"/streams/idle2", "admin"); code != 404 {
		t.Errorf("DELETE without block of an ID with no stream: %d, want 404", code)
	}
	ts.shutdown(t)
	if n := ffmpegRuns(ts, "bl"); n != 1 {
		t.Errorf("bl: %d ffmpeg runs, want 1", n)
	}
}

func strOf(v any) string { s, _ := v.(string); return s }

// A WebSocket that arrives once Shutdown has begun is refused at the
// handshake: counting it would race Shutdown's wait for the others.
func TestWebSocketAfterShutdownIsRefused(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ts.api.Shutdown(ctx)
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?id=late&key=k", nil)
	if err == nil {
		c.Close()
		t.Fatal("a WebSocket was accepted after Shutdown began")
	}
	if resp == nil || resp.StatusCode != 503 {
		t.Fatalf("handshake after Shutdown: %v %v, want 503", resp, err)
	}
	resp.Body.Close()
}
