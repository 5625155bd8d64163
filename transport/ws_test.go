package transport

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
)

func dialWS(t *testing.T, ts *testServer, query string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?"+query, hdr)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readUntilClose collects status messages until the server closes, and
// returns them with the close error.
func readUntilClose(t *testing.T, c *websocket.Conn) ([]map[string]any, *websocket.CloseError) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var msgs []map[string]any
	for {
		kind, data, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return msgs, ce
			}
			t.Fatalf("read: %v", err)
		}
		if kind != websocket.TextMessage {
			t.Fatalf("server sent a binary message")
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("status is not JSON: %q", data)
		}
		msgs = append(msgs, m)
	}
}

func readStatus(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m map[string]any
	if err := c.ReadJSON(&m); err != nil {
		t.Fatalf("read status: %v", err)
	}
	return m
}

func TestWebSocketStream(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	c := dialWS(t, ts, "id=ws1&key=k", nil)
	if m := readStatus(t, c); m["type"] != "ready" || m["id"] != "ws1" {
		t.Fatalf("first message: %v", m)
	}
	want := mp3(60, 3)
	for off, i := 0, 0; off < len(want); i++ {
		end := min(off+400+i, len(want)) // 100 ms-ish pieces that cut frames
		if err := c.WriteMessage(websocket.BinaryMessage, want[off:end]); err != nil {
			t.Fatal(err)
		}
		off = end
	}
	// A text message is answered with an error, and the stream goes on.
	c.WriteMessage(websocket.TextMessage, []byte(`{"hello":1}`))
	for {
		m := readStatus(t, c)
		if m["type"] == "error" {
			if !strings.Contains(m["errmsg"].(string), "binary") {
				t.Errorf("text message error: %v", m)
			}
			break
		}
	}
	// Status messages report what was accepted.
	for deadline := time.Now().Add(5 * time.Second); ; {
		m := readStatus(t, c)
		if m["type"] == "status" && m["bytes"].(float64) == float64(len(want)) && m["ffmpeg"] == "publishing" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status with all bytes: %v", m)
		}
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "done"))
	readUntilClose(t, c)
	// Close 1000 ends the stream at once.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, live := ts.reg.Info("ws1"); !live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("session still live after a normal close")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := ts.received(t, "ws1"); !bytes.Equal(got, want) {
		t.Fatalf("ffmpeg read %d of %d bytes", len(got), len(want))
	}
}

func TestWebSocketReconnectContinuesTheStream(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	c := dialWS(t, ts, "id=re&key=k", nil)
	readStatus(t, c)
	c.WriteMessage(websocket.BinaryMessage, mp3(5, 1))
	for {
		if info, ok := ts.reg.Info("re"); ok && info.Bytes > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.Close() // dropped, no close frame
	for deadline := time.Now().Add(5 * time.Second); ; {
		c2, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?id=re&key=k", nil)
		if err != nil {
			t.Fatal(err)
		}
		if m := readStatus(t, c2); m["type"] == "ready" {
			c2.WriteMessage(websocket.BinaryMessage, mp3(5, 2))
			c2.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			readUntilClose(t, c2)
			c2.Close()
			break
		}
		c2.Close() // the server has not noticed the drop yet
		if time.Now().After(deadline) {
			t.Fatal("could not reconnect")
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := ts.received(t, "re")
	if want := append(mp3(5, 1), mp3(5, 2)...); !bytes.Equal(got, want) {
		t.Fatalf("one ffmpeg should have read both connections' audio: %d bytes", len(got))
	}
	if n := len(fakeffmpeg.OutputFiles(ts.dir, "re")); n != 1 {
		t.Fatalf("%d ffmpeg runs, want 1", n)
	}
}

func TestWebSocketRefusals(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		c.MaxMessage = 1000
		s.MaxSessions = 2
	})
	failing := newServer(t, fakeffmpeg.Fail, nil)
	expectClose := func(t *testing.T, c *websocket.Conn, code int, text string) {
		t.Helper()
		msgs, ce := readUntilClose(t, c)
		if ce.Code != code || !strings.Contains(ce.Text, text) {
			t.Errorf("close %d %q, want %d %q", ce.Code, ce.Text, code, text)
		}
		last := msgs[len(msgs)-1]
		if last["type"] != "error" || !strings.Contains(last["errmsg"].(string), text) {
			t.Errorf("no error status before the close: %v", msgs)
		}
	}
	t.Run("wrong key", func(t *testing.T) {
		expectClose(t, dialWS(t, ts, "id=a&key=x", nil), websocket.ClosePolicyViolation, "wrong or missing key")
	})
	t.Run("bad id", func(t *testing.T) {
		expectClose(t, dialWS(t, ts, "id=a.b&key=k", nil), websocket.ClosePolicyViolation, "invalid live id")
	})
	t.Run("second publisher", func(t *testing.T) {
		first := dialWS(t, ts, "id=two&key=k", nil)
		readStatus(t, first)
		expectClose(t, dialWS(t, ts, "id=two&key=k", nil), websocket.ClosePolicyViolation, "already has a publisher")
	})
	t.Run("too big", func(t *testing.T) {
		c := dialWS(t, ts, "id=big&key=k", nil)
		c.WriteMessage(websocket.BinaryMessage, mp3(7, 1)) // 1008 bytes
		expectClose(t, c, websocket.CloseMessageTooBig, "larger than 1000 bytes")
	})
	t.Run("not mp3", func(t *testing.T) {
		c := dialWS(t, ts, "id=ogg&key=k", nil)
		c.WriteMessage(websocket.BinaryMessage, append([]byte("OggS"), make([]byte, 300)...))
		expectClose(t, c, websocket.CloseUnsupportedData, "not MP3")
	})
	t.Run("capacity", func(t *testing.T) {
		// The streams of the cases above end with their connections, not at once.
		for deadline := time.Now().Add(10 * time.Second); ts.reg.Len() > 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d streams of the cases above still live", ts.reg.Len())
			}
		}
		for _, id := range []string{"cap1", "cap2"} {
			c := dialWS(t, ts, "id="+id+"&key=k", nil)
			c.WriteMessage(websocket.BinaryMessage, mp3(2, 1))
		}
		for deadline := time.Now().Add(5 * time.Second); ts.reg.Len() < 2; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("sessions did not start")
			}
		}
		c := dialWS(t, ts, "id=cap3&key=k", nil)
		c.WriteMessage(websocket.BinaryMessage, mp3(2, 1))
		expectClose(t, c, websocket.CloseTryAgainLater, "too many live sessions")
	})
	t.Run("ffmpeg fails", func(t *testing.T) {
		c := dialWS(t, failing, "id=f&key=k", nil)
		c.WriteMessage(websocket.BinaryMessage, mp3(3, 1))
		expectClose(t, c, websocket.CloseInternalServerErr, "Connection refused")
	})
	t.Run("foreign origin", func(t *testing.T) {
		_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?id=o&key=k",
			http.Header{"Origin": {"https://evil.example"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("foreign origin: %v %v", err, resp)
		}
		c := dialWS(t, ts, "id=o&key=k", http.Header{"Origin": {ts.URL}})
		if m := readStatus(t, c); m["type"] != "ready" {
			t.Fatalf("same origin refused: %v", m)
		}
	})
}

func TestShutdownClosesWebSockets(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	c := dialWS(t, ts, "id=sd&key=k", nil)
	readStatus(t, c)
	c.WriteMessage(websocket.BinaryMessage, mp3(5, 1))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.api.Shutdown(ctx)
	}()
	_, ce := readUntilClose(t, c)
	if ce.Code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", ce.Code)
	}
	if got := ts.received(t, "sd"); !bytes.Equal(got, mp3(5, 1)) {
		t.Fatalf("ffmpeg read %d bytes before the shutdown", len(got))
	}
}

func TestWebSocketWebM(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	c := dialWS(t, ts, "id=wm&key=k&format=webm", nil)
	if m := readStatus(t, c); m["type"] != "ready" {
		t.Fatalf("first message: %v", m)
	}
	webm, err := os.ReadFile("../session/testdata/mediarecorder.webm") // Chromium's MediaRecorder
	if err != nil {
		t.Fatal(err)
	}
	for rest := webm; len(rest) > 0; { // slices cut anywhere, as a recorder's timeslices are
		n := min(len(rest), 1000)
		c.WriteMessage(websocket.BinaryMessage, rest[:n])
		rest = rest[n:]
	}
	// Its seconds are counted from its blocks, as MP3's from its frames.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		info, ok := ts.reg.Info("wm")
		if ok && info.Bytes == int64(len(webm)) {
			if want := session.WebMDuration(webm).Seconds(); info.Seconds != want || want != 3.96 {
				t.Errorf("%.3f s counted, want the %.3f s of the stream (3.96)", info.Seconds, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the WebM data was not accepted")
		}
	}
	// Another format for the same live ID is refused while it streams.
	code, r := do(t, "POST", ts.URL+"/base64?key=k&id=wm", strings.NewReader(base64.StdEncoding.EncodeToString(mp3(3, 1))))
	if code != 409 {
		t.Errorf("POST during a WebSocket: %d %+v", code, r)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	readUntilClose(t, c)
	// ffmpeg reads the stream's header and tracks, then its blocks, retimed.
	init := webm[:bytes.Index(webm, []byte{0x1F, 0x43, 0xB6, 0x75})] // up to the first Cluster
	if got := ts.received(t, "wm"); !bytes.HasPrefix(got, init) || session.WebMDuration(got) != session.WebMDuration(webm) {
		t.Fatalf("ffmpeg read %d bytes holding %v of audio, want the stream's init and its %v", len(got), session.WebMDuration(got), session.WebMDuration(webm))
	}
	bad := newServer(t, fakeffmpeg.Normal, nil)
	_, ce := readUntilClose(t, dialWSWrite(t, bad, "id=wn&key=k&format=webm", []byte("RIFF....WAVEfmt ")))
	if ce.Code != websocket.CloseUnsupportedData || !strings.Contains(ce.Text, "not WebM") {
		t.Errorf("WAV sent as WebM: close %v", ce)
	}
	_, ce = readUntilClose(t, dialWS(t, bad, "id=x&key=k&format=wav", nil))
	if ce.Code != websocket.CloseUnsupportedData || !strings.Contains(ce.Text, "mp3, webm, pcm or aac") {
		t.Errorf("format=wav: close %v", ce)
	}
}

// dialWSWrite dials and sends one binary message.
func dialWSWrite(t *testing.T, ts *testServer, query string, msg []byte) *websocket.Conn {
	t.Helper()
	c := dialWS(t, ts, query, nil)
	readStatus(t, c)
	c.WriteMessage(websocket.BinaryMessage, msg)
	return c
}

// TestReconnectRightAfterTheCloseAnswer: the server answers a client's
// close once the ID is free, so a client that reconnects the moment it has
// the answer is never refused as busy with its own old connection.
func TestReconnectRightAfterTheCloseAnswer(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	for i := 0; i < 30; i++ {
		c := dialWS(t, ts, "id=again&key=k", nil)
		if m := readStatus(t, c); m["type"] != "ready" {
			t.Fatalf("round %d: %v", i, m)
		}
		if err := c.WriteMessage(websocket.BinaryMessage, mp3(3, byte(i))); err != nil {
			t.Fatal(err)
		}
		// Going away: the client will be back to continue the stream.
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""))
		if _, ce := readUntilClose(t, c); ce.Code != websocket.CloseGoingAway {
			t.Fatalf("round %d: close answered with %v", i, ce)
		}
		c.Close()
	}
}

// TestCloseReasonStaysUTF8: a long reason (ffmpeg's words, with a redacted
// "…") is cut on a character boundary, within the 123 bytes a close frame
// allows.
func TestCloseReasonStaysUTF8(t *testing.T) {
	for pad := 0; pad < 4; pad++ {
		msg := strings.Repeat("x", 118+pad) + "…" + strings.Repeat("y", 40)
		got := closeReason(msg)
		if !utf8.ValidString(got) || len(got) > 123 {
			t.Errorf("pad %d: %q (%d bytes)", pad, got, len(got))
		}
	}
}
