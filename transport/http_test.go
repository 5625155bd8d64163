package transport

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	fakeffmpeg.Main()
	goleak.VerifyTestMain(m)
}

// mp3 is n frames of MPEG-2 32 kbps 16 kHz mono (144 bytes, 36 ms each).
func mp3(n int, fill byte) []byte {
	f := bytes.Repeat([]byte{fill}, 144)
	copy(f, []byte{0xFF, 0xF3, 0x48, 0xC0})
	return bytes.Repeat(f, n)
}

type testServer struct {
	*httptest.Server
	api *Server
	reg *session.Registry
	dir string // where the fake ffmpegs write
}

// newServer runs the real handlers and registry with the fake ffmpeg.
func newServer(t *testing.T, mode string, mod func(*Config, *session.Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	log := logrus.New()
	log.SetOutput(io.Discard)
	scfg := session.Config{
		FFmpeg:      ffpipe.Config{Binary: os.Args[0], ExtraEnv: fakeffmpeg.Env(dir, mode)},
		RTMPBase:    "rtmp://127.0.0.1:1/live",
		IdleTimeout: 5 * time.Second,
		FlushGrace:  10 * time.Second,
	}
	tcfg := Config{Key: "k", Version: "test"}
	if mod != nil {
		mod(&tcfg, &scfg)
	}
	reg := session.NewRegistry(scfg, logrus.NewEntry(log))
	api := New(tcfg, reg, logrus.NewEntry(log))
	ts := &testServer{Server: httptest.NewServer(api.Handler()), api: api, reg: reg, dir: dir}
	t.Cleanup(func() { ts.shutdown(t) })
	return ts
}

func (ts *testServer) shutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ts.api.Shutdown(ctx)
	ts.Server.Close()
	ts.reg.Close(ctx)
}

// received is what the fake ffmpeg(s) for id read. It shuts the server
// down first, so every ffmpeg has read to EOF.
func (ts *testServer) received(t *testing.T, id string) []byte {
	t.Helper()
	ts.shutdown(t)
	var all []byte
	for _, f := range fakeffmpeg.OutputFiles(ts.dir, id) {
		b, _ := os.ReadFile(f)
		all = append(all, b...)
	}
	return all
}

type legacyReply struct {
	Errmsg  string  `json:"errmsg"`
	Errcode int     `json:"errcode"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

func do(t *testing.T, method, url string, body io.Reader) (int, legacyReply) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r legacyReply
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s %s: reply is not JSON: %q", method, url, raw)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	return resp.StatusCode, r
}

func TestBase64PostReachesFFmpeg(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	var want []byte
	for i := 0; i < 5; i++ {
		chunk := mp3(14, byte(i+1))
		want = append(want, chunk...)
		end := ""
		if i == 4 {
			end = "&end=1"
		}
		code, r := do(t, "POST", ts.URL+"/base64?key=k&id=abc"+end, strings.NewReader(base64.StdEncoding.EncodeToString(chunk)))
		if code != 200 || r.Errcode != 0 || r.Errmsg != "ok" {
			t.Fatalf("chunk %d: %d %+v", i, code, r)
		}
	}
	if got := ts.received(t, "abc"); !bytes.Equal(got, want) {
		t.Fatalf("ffmpeg read %d bytes, want %d", len(got), len(want))
	}
}

func TestErrorReplies(t *testing.T) {
	good := base64.StdEncoding.EncodeToString(mp3(3, 1))
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		c.MaxBody = 1000
		s.MaxSessions = 1
	})
	failing := newServer(t, fakeffmpeg.Fail, nil)
	// Fill the one session slot.
	if code, r := do(t, "POST", ts.URL+"/base64?key=k&id=first", strings.NewReader(good)); code != 200 {
		t.Fatalf("first: %d %+v", code, r)
	}
	for _, tc := range []struct {
		name, method, url, body string
		code                    int
		msg                     string
	}{
		{"wrong method", "GET", "/base64?key=k&id=first", "", 405, "method not allowed"},
		{"wrong key", "POST", "/base64?key=x&id=first", good, 403, "wrong or missing key"},
		{"no key", "POST", "/base64?id=first", good, 403, "wrong or missing key"},
		{"missing id", "POST", "/base64?key=k", good, 400, "missing id"},
		{"dots", "POST", "/base64?key=k&id=..%2Fetc", good, 400, "invalid live id"},
		{"long id", "POST", "/base64?key=k&id=" + strings.Repeat("a", 65), good, 400, "invalid live id"},
		{"unicode id", "POST", "/base64?key=k&id=%E7%9B%B4%E6%92%AD", good, 400, "invalid live id"},
		{"bad base64", "POST", "/base64?key=k&id=first", "!!!!", 400, "invalid base64"},
		{"empty", "POST", "/base64?key=k&id=first", "", 400, "empty body"},
		{"too large", "POST", "/base64?key=k&id=first", strings.Repeat("A", 1001), 413, "body larger than 1000 bytes"},
		{"not mp3", "POST", "/base64?key=k&id=first", base64.StdEncoding.EncodeToString([]byte("<html>hello</html>")), 415, "not MP3"},
		{"capacity", "POST", "/base64?key=k&id=second", good, 503, "too many live sessions"},
		{"upstream", "POST", "/base64?key=k&id=x", good, 502, "Connection refused"},
		{"live wrong method", "GET", "/live/abc?key=k", "", 405, "method not allowed"},
		{"live bad id", "POST", "/live/a%20b?key=k", "x", 400, "invalid live id"},
		{"ws without upgrade", "GET", "/ws?key=k&id=abc", "", 400, "WebSocket connection"},
		{"unknown path", "GET", "/nothing", "", 404, "no such endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := ts.URL
			if tc.name == "upstream" {
				base = failing.URL
			}
			code, r := do(t, tc.method, base+tc.url, strings.NewReader(tc.body))
			if code != tc.code || r.Errcode != tc.code || !strings.Contains(r.Errmsg, tc.msg) {
				t.Errorf("got %d %+v, want %d %q", code, r, tc.code, tc.msg)
			}
		})
	}
}

func TestRoot(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	resp, err := http.Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Name     string `json:"name"`
		Version  string `json:"version"`
		Uptime   string `json:"uptime"`
		Sessions *int   `json:"sessions"`
	}
	json.NewDecoder(resp.Body).Decode(&r)
	if r.Name != "ffmpeg-publisher" || r.Version != "test" || r.Uptime == "" || r.Sessions == nil || *r.Sessions != 0 {
		t.Errorf("GET / = %+v", r)
	}
}

func TestLiveUploadStreams(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	pr, pw := io.Pipe()
	want := mp3(100, 7)
	go func() {
		// Pieces that cut frames, as a network would.
		for off := 0; off < len(want); off += 1000 {
			pw.Write(want[off:min(off+1000, len(want))])
		}
		pw.Close()
	}()
	code, r := do(t, "PUT", ts.URL+"/live/up1?key=k", pr) // unknown length: chunked
	if code != 200 || r.Bytes != int64(len(want)) || r.Seconds < 3.59 || r.Seconds > 3.61 {
		t.Fatalf("upload: %d %+v", code, r)
	}
	code, r = do(t, "POST", ts.URL+"/live/up2?key=k", strings.NewReader("RIFF....WAVEfmt "))
	if code != 415 || r.Errcode != 415 {
		t.Errorf("non-MP3 upload: %d %+v", code, r)
	}
	if got := ts.received(t, "up1"); !bytes.Equal(got, want) {
		t.Fatalf("ffmpeg read %d bytes, want %d", len(got), len(want))
	}
}

func TestLiveUploadHoldsTheID(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	pr, pw := io.Pipe()
	done := make(chan int)
	go func() {
		code, _ := do(t, "POST", ts.URL+"/live/held?key=k", pr)
		done <- code
	}()
	pw.Write(mp3(3, 1))
	// Wait until the upload has written, then try a POST to the same ID.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if info, ok := ts.reg.Info("held"); ok && info.Bytes > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("upload did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	code, r := do(t, "POST", ts.URL+"/base64?key=k&id=held", strings.NewReader(base64.StdEncoding.EncodeToString(mp3(2, 2))))
	if code != 409 || !strings.Contains(r.Errmsg, "already has a publisher") {
		t.Errorf("POST during an upload: %d %+v", code, r)
	}
	pw.Close()
	if code := <-done; code != 200 {
		t.Errorf("upload: %d", code)
	}
}

func TestSeqDuplicatesReorderingAndLoss(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) { s.SeqWait = 300 * time.Millisecond })
	post := func(seq int, fill byte) (int, map[string]any) {
		resp, err := http.Post(ts.URL+"/base64?key=k&id=sq&seq="+strconv.Itoa(seq), "text/plain",
			strings.NewReader(base64.StdEncoding.EncodeToString(mp3(3, fill))))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	// 0, then 0 again (a retry whose reply was lost): written once.
	if code, m := post(0, 1); code != 200 || m["duplicate"] != nil {
		t.Fatalf("seq 0: %d %v", code, m)
	}
	if code, m := post(0, 1); code != 200 || m["duplicate"] != true {
		t.Fatalf("seq 0 again: %d %v", code, m)
	}
	// 2 arrives before 1: it waits, and 1 goes first.
	done := make(chan int)
	go func() { code, _ := post(2, 3); done <- code }()
	time.Sleep(50 * time.Millisecond)
	if code, _ := post(1, 2); code != 200 {
		t.Fatalf("seq 1: %d", code)
	}
	if code := <-done; code != 200 {
		t.Fatalf("seq 2: %d", code)
	}
	// 4 without 3: after the wait the stream goes on; 3 is then too late.
	if code, _ := post(4, 5); code != 200 {
		t.Fatalf("seq 4: %d", code)
	}
	if code, m := post(3, 4); code != 409 || !strings.Contains(m["errmsg"].(string), "went on without it") {
		t.Fatalf("late seq 3: %d %v", code, m)
	}
	if code, m := post(-1, 4); code != 400 {
		t.Fatalf("seq -1: %d %v", code, m)
	}
	got := ts.received(t, "sq")
	want := append(append(append(mp3(3, 1), mp3(3, 2)...), mp3(3, 3)...), mp3(3, 5)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("ffmpeg read %d bytes in the wrong order or with duplicates; want %d", len(got), len(want))
	}
}
