package transport

import (
	"bytes"
	"encoding/base64"
	"io"
	"os"
	"strings"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"
)

// TestWebMOnEveryTransport: Chromium's MediaRecorder stream, cut anywhere,
// over base64 POSTs (format=webm), binary POSTs (audio/webm, as its Blobs
// are typed) and an upload: each reply counts its seconds, and ffmpeg
// reads the stream's audio whole. (The WebSocket: TestWebSocketWebM.)
func TestWebMOnEveryTransport(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	webm, err := os.ReadFile("../session/testdata/mediarecorder.webm")
	if err != nil {
		t.Fatal(err)
	}
	want := session.WebMDuration(webm)
	cuts := [][]byte{webm[:1], webm[1:200], webm[200:5001], webm[5001:]}
	post := func(id, path, ctype string, body func([]byte) []byte) {
		for i, c := range cuts {
			if code, r := postType(t, ts.URL+path+"&id="+id, ctype, body(c)); code != 200 {
				t.Fatalf("%s: chunk %d: %d %+v", id, i, code, r)
			}
		}
		if info, _ := ts.reg.Info(id); info.Seconds != want.Seconds() {
			t.Errorf("%s: %.3f s counted, want %v", id, info.Seconds, want)
		}
	}
	post("wb", "/base64?key=k&format=webm", "", func(c []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(c)) })
	post("wc", "/chunk?key=k", "audio/webm;codecs=opus", func(c []byte) []byte { return c })
	pr, pw := io.Pipe()
	go func() {
		for _, c := range cuts {
			pw.Write(c)
		}
		pw.Close()
	}()
	if code, r := do(t, "POST", ts.URL+"/live/wu?key=k&format=webm", pr); code != 200 || r.Bytes != int64(len(webm)) || r.Seconds != want.Seconds() {
		t.Fatalf("upload: %d %+v, want %v", code, r, want)
	}
	if code, r := postType(t, ts.URL+"/chunk?key=k&id=x", "audio/webm", []byte("RIFF....WAVEfmt ")); code != 415 || !strings.Contains(r.Errmsg, "not WebM") {
		t.Errorf("WAV as audio/webm: %d %+v", code, r)
	}
	if code, r := postType(t, ts.URL+"/chunk?key=k&id=y&format=mp3", "audio/webm", webm); code != 400 {
		t.Errorf("audio/webm with format=mp3: %d %+v", code, r)
	}
	for _, id := range []string{"wb", "wc", "wu"} {
		if got := ts.received(t, id); !bytes.HasPrefix(got, webm[:100]) || session.WebMDuration(got) != want {
			t.Errorf("%s: ffmpeg read %d bytes holding %v, want the stream's header and its %v", id, len(got), session.WebMDuration(got), want)
		}
	}
}
