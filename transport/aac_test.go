package transport

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"

	"github.com/gorilla/websocket"
)

// adts is n ADTS frames of AAC LC, 16 kHz mono (100 bytes, 64 ms each).
func adts(n int, fill byte) []byte {
	f := bytes.Repeat([]byte{fill}, 100)
	copy(f, []byte{0xFF, 0xF1, 0x60, 0x40, 0x0C, 0x9F, 0xFC})
	return bytes.Repeat(f, n)
}

// TestAACOnEveryTransport: format=aac is taken by POSTs (base64, or raw
// bytes with Content-Type audio/aac), uploads and WebSockets and counted in
// AAC frames; what is not ADTS is refused as not AAC (415, close 1003).
func TestAACOnEveryTransport(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	code, r := do(t, "POST", ts.URL+"/base64?key=k&id=a1&format=aac&end=1", strings.NewReader(base64.StdEncoding.EncodeToString(adts(10, 1))))
	if code != 200 || r.Errcode != 0 {
		t.Errorf("POST: %d %+v", code, r)
	}
	if code, r := postType(t, ts.URL+"/chunk?key=k&id=a5&end=1", "audio/aac", adts(10, 3)); code != 200 || r.Errcode != 0 {
		t.Errorf("binary POST: %d %+v", code, r)
	}
	code, r = do(t, "POST", ts.URL+"/live/a2?key=k&format=aac", bytes.NewReader(adts(10, 2)))
	if code != 200 || r.Seconds != 0.64 {
		t.Errorf("upload: %d %+v, want 0.64 s", code, r)
	}
	code, r = do(t, "POST", ts.URL+"/base64?key=k&id=a3&format=aac", strings.NewReader(base64.StdEncoding.EncodeToString(mp3(10, 1))))
	if code != 415 || !strings.Contains(r.Errmsg, "not AAC") {
		t.Errorf("MP3 sent as AAC: %d %+v", code, r)
	}
	if code, r := postType(t, ts.URL+"/chunk?key=k&id=a6", "audio/aac", mp3(10, 1)); code != 415 {
		t.Errorf("MP3 sent as audio/aac: %d %+v", code, r)
	}
	c := dialWSWrite(t, ts, "id=a4&key=k&format=aac", []byte("<html>not audio at all</html>"))
	if _, ce := readUntilClose(t, c); ce == nil || ce.Code != websocket.CloseUnsupportedData || !strings.Contains(ce.Text, "not AAC") {
		t.Errorf("junk over a WebSocket: close %v", ce)
	}
}
