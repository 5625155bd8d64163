package transport

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"

	"github.com/gorilla/websocket"
)

// pcm is n bytes of PCM that tell their positions apart.
func pcm(n int, fill byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ fill
	}
	return b
}

// postType posts body with a Content-Type ("" sends none).
func postType(t *testing.T, url, ctype string, body []byte) (int, legacyReply) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r legacyReply
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("reply is not JSON: %q", raw)
	}
	return resp.StatusCode, r
}

// TestPCMOnEveryTransport: PCM cut at odd offsets (half a stereo frame,
// an odd byte) reaches ffmpeg whole, in order, over POSTs (base64 and
// binary), the upload and the WebSocket.
func TestPCMOnEveryTransport(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	data := pcm(48000*4/5, 3) // 200 ms of 48 kHz stereo
	cuts := [][]byte{data[:1], data[1:6], data[6:4001], data[4001:4003], data[4003:]}
	q := "key=k&format=pcm&rate=48000&channels=2"

	for i, c := range cuts {
		url := ts.URL + "/base64?id=pb&" + q
		if i == len(cuts)-1 {
			url += "&end=1"
		}
		if code, r := postType(t, url, "", []byte(base64.StdEncoding.EncodeToString(c))); code != 200 {
			t.Fatalf("base64 chunk %d: %d %+v", i, code, r)
		}
	}
	for i, c := range cuts {
		url := ts.URL + "/chunk?id=pc&key=k"
		if i == len(cuts)-1 {
			url += "&end=1"
		}
		if code, r := postType(t, url, "audio/L16; rate=48000; channels=2", c); code != 200 {
			t.Fatalf("binary chunk %d: %d %+v", i, code, r)
		}
	}
	pr, pw := io.Pipe()
	go func() {
		for _, c := range cuts {
			pw.Write(c)
		}
		pw.Close()
	}()
	if code, r := do(t, "POST", ts.URL+"/live/pu?"+q, pr); code != 200 || r.Bytes != int64(len(data)) || r.Seconds < 0.199 || r.Seconds > 0.201 {
		t.Fatalf("upload: %d %+v", code, r)
	}
	c := dialWS(t, ts, "id=pw&"+q, nil)
	readStatus(t, c)
	for _, p := range cuts {
		c.WriteMessage(websocket.BinaryMessage, p)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	readUntilClose(t, c)

	for _, id := range []string{"pb", "pc", "pu", "pw"} {
		if got := ts.received(t, id); !bytes.Equal(got, data) {
			t.Errorf("%s: ffmpeg read %d bytes, want the %d sent", id, len(got), len(data))
		}
	}
}

// TestPCMParameters: anything but the accepted rates and 1-2 channels is
// a 400 listing them; a stream that changes them is a 409.
func TestPCMParameters(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	for _, q := range []string{"format=pcm", "format=pcm&rate=44000", "format=pcm&rate=16000&channels=3",
		"format=pcm&rate=16000&channels=0", "format=pcm&rate=x"} {
		code, r := postType(t, ts.URL+"/base64?id=p&key=k&"+q, "", []byte("AAAA"))
		if code != 400 || !strings.Contains(r.Errmsg, "8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000") ||
			!strings.Contains(r.Errmsg, "channels 1 or 2") {
			t.Errorf("%s: %d %q, want 400 listing the accepted values", q, code, r.Errmsg)
		}
		_, ce := readUntilClose(t, dialWS(t, ts, "id=p&key=k&"+q, nil))
		if ce == nil || ce.Code != websocket.CloseUnsupportedData || !strings.Contains(ce.Text, "44100, 48000") {
			t.Errorf("WebSocket %s: close %v", q, ce)
		}
	}
	for _, q := range []string{"format=ogg", "rate=16000", "format=mp3&channels=1"} {
		if code, r := postType(t, ts.URL+"/base64?id=p&key=k&"+q, "", []byte("AAAA")); code != 400 {
			t.Errorf("%s: %d %+v, want 400", q, code, r)
		}
	}
	if code, r := postType(t, ts.URL+"/chunk?id=p&key=k&rate=8000", "audio/L16;rate=16000", []byte{1, 2}); code != 400 ||
		!strings.Contains(r.Errmsg, "contradicts") {
		t.Errorf("a rate against the Content-Type's: %d %+v", code, r)
	}
	if code, r := postType(t, ts.URL+"/chunk?id=p&key=k&format=pcm&rate=8000", "audio/mpeg", []byte{1, 2}); code != 400 ||
		!strings.Contains(r.Errmsg, "contradicts") {
		t.Errorf("format=pcm with audio/mpeg: %d %+v", code, r)
	}

	chunk := base64.StdEncoding.EncodeToString(pcm(640, 1))
	if code, r := postType(t, ts.URL+"/base64?id=s&key=k&format=pcm&rate=16000", "", []byte(chunk)); code != 200 {
		t.Fatalf("first chunk: %d %+v", code, r)
	}
	for _, q := range []string{"format=pcm&rate=8000", "format=pcm&rate=16000&channels=2", "format=mp3"} {
		code, r := postType(t, ts.URL+"/base64?id=s&key=k&"+q, "", []byte(chunk))
		if code != 409 || !strings.Contains(r.Errmsg, "pcm at 16000 Hz with 1 channels") {
			t.Errorf("%s mid-stream: %d %q, want 409", q, code, r.Errmsg)
		}
	}
	if code, r := postType(t, ts.URL+"/base64?id=s&key=k&format=pcm&rate=16000&channels=1&end=1", "", []byte(chunk)); code != 200 {
		t.Errorf("the same parameters again: %d %+v", code, r)
	}
}

// TestBinaryChunks: the Content-Type decides whether a chunk is raw bytes;
// text/plain, none and JSON are base64, as legacy clients send it.
func TestBinaryChunks(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	mp3s := mp3(5, 1)
	b64 := []byte(base64.StdEncoding.EncodeToString(mp3s))
	for _, tc := range []struct {
		id, path, ctype string
		body            []byte
	}{
		{"mpeg", "/base64", "audio/mpeg", mp3s},
		{"octet", "/chunk", "application/octet-stream", mp3s},
		{"octetfmt", "/base64", "application/octet-stream", mp3s}, // format=mp3 below
		{"text", "/base64", "text/plain; charset=utf-8", b64},
		{"none", "/base64", "", b64},
		{"json", "/chunk", "application/json", []byte(`"` + string(b64) + `"`)},
		{"form", "/base64", "application/x-www-form-urlencoded", b64},
	} {
		url := ts.URL + tc.path + "?key=k&end=1&id=" + tc.id
		if tc.id == "octetfmt" {
			url += "&format=mp3"
		}
		if code, r := postType(t, url, tc.ctype, tc.body); code != 200 || r.Errmsg != "ok" {
			t.Errorf("%s %q: %d %+v", tc.path, tc.ctype, code, r)
		}
	}
	// Numbered chunks, binary, through the alias.
	for i := range 3 {
		url := ts.URL + "/chunk?key=k&id=seq&seq=" + string(rune('0'+i))
		if i == 2 {
			url += "&end=1"
		}
		code, raw := postRaw(t, url, "audio/mpeg", mp3(2, byte(i+1)))
		if code != 200 || raw["seq"] != float64(i) {
			t.Errorf("seq %d: %d %v", i, code, raw)
		}
	}
	if code, r := postType(t, ts.URL+"/chunk?key=k&id=e", "audio/mpeg", nil); code != 400 || !strings.Contains(r.Errmsg, "empty") {
		t.Errorf("empty binary chunk: %d %+v", code, r)
	}
	if code, r := postType(t, ts.URL+"/base64?key=k&id=e", "audio/mpeg", []byte("not mp3 at all, just text")); code != 415 {
		t.Errorf("text as audio/mpeg: %d %+v", code, r)
	}
	for _, id := range []string{"mpeg", "octet", "octetfmt", "text", "none", "json", "form"} {
		if got := ts.received(t, id); !bytes.Equal(got, mp3s) {
			t.Errorf("%s: ffmpeg read %d bytes, want the %d sent", id, len(got), len(mp3s))
		}
	}
	want := append(append(mp3(2, 1), mp3(2, 2)...), mp3(2, 3)...)
	if got := ts.received(t, "seq"); !bytes.Equal(got, want) {
		t.Errorf("seq: ffmpeg read %d bytes, want %d", len(got), len(want))
	}
}

func postRaw(t *testing.T, url, ctype string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, ctype, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// TestWebMOverPOSTs: format= works on POSTs for every format, WebM too.
func TestWebMOverPOSTs(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	webm, err := os.ReadFile("../session/testdata/mediarecorder.webm")
	if err != nil {
		t.Fatal(err)
	}
	half := len(webm) / 2
	for i, part := range [][]byte{webm[:half], webm[half:]} {
		url := ts.URL + "/chunk?key=k&id=wp&format=webm&seq=" + strconv.Itoa(i)
		if code, r := postType(t, url, "application/octet-stream", part); code != 200 {
			t.Fatalf("part %d: %d %+v", i, code, r)
		}
	}
	if info, ok := ts.reg.Info("wp"); !ok || info.Seconds <= 0 {
		t.Errorf("WebM over POSTs: %+v", info)
	}
}
