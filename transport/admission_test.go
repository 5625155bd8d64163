package transport

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"ffmpeg-publisher/admission"
	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"
	"ffmpeg-publisher/whip"

	"github.com/gorilla/websocket"
)

// fakeLoad is an injected admission signal: the test sets the load, and
// each look (Controller.Look) reads it.
type fakeLoad struct {
	mu sync.Mutex
	l  admission.Load
}

func (f *fakeLoad) set(l admission.Load) { f.mu.Lock(); f.l = l; f.mu.Unlock() }
func (f *fakeLoad) probe() admission.Load {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.l
}

// refusal is one HTTP reply with the headers that matter here.
type refusal struct {
	code       int
	retryAfter string
	body       legacyReply
}

func request(t *testing.T, method, url string, body io.Reader) refusal {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := refusal{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("%s %s: reply is not JSON: %q", method, url, raw)
	}
	return r
}

// TestSaturatedRefusesOnlyNewStreams: told the machine is saturated, the
// server refuses new streams (503 with Retry-After in the legacy JSON
// shape, WebSocket close 1013) and /readyz turns 503 (404 for a sticky
// balancer), while streams already running keep writing, also through a
// new connection; once the signal clears, /readyz is 200 and new streams
// start again.
func TestSaturatedRefusesOnlyNewStreams(t *testing.T) {
	load := &fakeLoad{l: admission.Load{CPU: 5}}
	ctrl := admission.New(load.probe, admission.Thresholds{CPU: 50}, nil)
	ctrl.Look()
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		s.Admission = ctrl
		c.Ready = ctrl.Check
		c.Admission = ctrl.Status
		c.AdminKey = "admin"
	})
	b64 := func(n int, fill byte) io.Reader {
		return strings.NewReader(base64.StdEncoding.EncodeToString(mp3(n, fill)))
	}
	if r := request(t, "GET", ts.URL+"/readyz", nil); r.code != 200 {
		t.Fatalf("calm /readyz: %d %+v", r.code, r.body)
	}
	// Running before saturation: a legacy stream and a streaming upload.
	if r := request(t, "POST", ts.URL+"/base64?key=k&id=old", b64(5, 1)); r.code != 200 {
		t.Fatalf("first POST: %d %+v", r.code, r.body)
	}
	pr, pw := io.Pipe()
	upload := make(chan refusal, 1)
	go func() { upload <- request(t, "POST", ts.URL+"/live/up?key=k", pr) }()
	pw.Write(mp3(5, 2))
	waitSession(t, ts, "up", true)

	load.set(admission.Load{CPU: 90})
	ctrl.Look()

	for _, path := range []string{"/readyz", "/readyz?sticky=1"} {
		r := request(t, "GET", ts.URL+path, nil)
		want := 503
		if strings.Contains(path, "sticky") {
			want = 404
		}
		if r.code != want || r.retryAfter == "" || r.body.Errcode != want {
			t.Errorf("saturated %s: %d Retry-After %q %+v, want %d with Retry-After", path, r.code, r.retryAfter, r.body, want)
		}
	}
	r := request(t, "POST", ts.URL+"/base64?key=k&id=new1", b64(5, 3))
	if r.code != 503 || r.body.Errcode != 503 || r.retryAfter == "" || !strings.Contains(r.body.Errmsg, "no new streams") {
		t.Errorf("new /base64 stream: %d Retry-After %q %+v, want 503 with Retry-After", r.code, r.retryAfter, r.body)
	}
	r = request(t, "POST", ts.URL+"/live/new2?key=k", bytes.NewReader(mp3(5, 4)))
	if r.code != 503 || r.retryAfter == "" {
		t.Errorf("new upload: %d Retry-After %q %+v, want 503 with Retry-After", r.code, r.retryAfter, r.body)
	}
	ws := dialWS(t, ts, "id=new3&key=k", nil)
	ws.WriteMessage(websocket.BinaryMessage, mp3(5, 5))
	if _, ce := readUntilClose(t, ws); ce.Code != websocket.CloseTryAgainLater {
		t.Errorf("new WebSocket stream: close %d %q, want 1013", ce.Code, ce.Text)
	}

	// The running streams carry on, over their connection and over new ones.
	if r := request(t, "POST", ts.URL+"/base64?key=k&id=old", b64(5, 6)); r.code != 200 {
		t.Errorf("running legacy stream refused: %d %+v", r.code, r.body)
	}
	if _, err := pw.Write(mp3(5, 7)); err != nil {
		t.Errorf("running upload: %v", err)
	}
	pw.Close()
	if r := <-upload; r.code != 200 || r.body.Bytes != 10*144 {
		t.Errorf("running upload: %d %+v, want 200 with 1440 bytes", r.code, r.body)
	}
	join := dialWS(t, ts, "id=old&key=k", nil)
	join.WriteMessage(websocket.BinaryMessage, mp3(5, 8))
	for {
		m := readStatus(t, join)
		if m["type"] == "error" {
			t.Fatalf("a new connection to a running stream was refused: %v", m)
		}
		if n, _ := m["bytes"].(float64); n >= 15*144 {
			break
		}
	}
	join.Close()
	code, list := adminDo(t, "GET", ts.URL+"/streams", "admin")
	adm, _ := list["admission"].(map[string]any)
	if refused, _ := adm["refused"].(map[string]any); code != 200 || adm["saturated"] != true || adm["reason"] != "cpu" || refused["cpu"] != 3.0 || adm["cpu_pressure"] != 90.0 {
		t.Errorf("GET /streams: %d admission %v, want saturated by cpu at 90%% with 3 refusals", code, list["admission"])
	}

	load.set(admission.Load{CPU: 5})
	for i := 0; i < 1000 && ctrl.Check() != nil; i++ {
		ctrl.Look()
	}
	if r := request(t, "GET", ts.URL+"/readyz", nil); r.code != 200 {
		t.Errorf("cleared /readyz: %d %+v", r.code, r.body)
	}
	if r := request(t, "POST", ts.URL+"/base64?key=k&id=new1", b64(5, 9)); r.code != 200 {
		t.Errorf("new stream once cleared: %d %+v", r.code, r.body)
	}
	if got := len(ts.received(t, "old")); got != 15*144 {
		t.Errorf("old: ffmpeg got %d bytes, want %d", got, 15*144)
	}
	for _, id := range []string{"new2", "new3"} {
		if n := ffmpegRuns(ts, id); n != 0 {
			t.Errorf("%s: %d ffmpegs started for a refused stream", id, n)
		}
	}
}

// TestSaturatedRefusesWHIPOffer: a WHIP offer for a new stream is refused
// with 503 and Retry-After before it is answered, while the server is
// saturated.
func TestSaturatedRefusesWHIPOffer(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, err := whip.NewHost(whip.Config{UDP: udp, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	ctrl := admission.New(func() admission.Load { return admission.Load{CPU: 99} }, admission.Thresholds{CPU: 50}, nil)
	ctrl.Look()
	ts := newServer(t, "", func(c *Config, s *session.Config) { c.WHIP = host; s.Admission = ctrl })
	t.Cleanup(host.Close)
	resp := postOffer(t, ts, "new", offer(t, opusCodec))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("WHIP offer while saturated: %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// While saturated, a new stream is refused before on_publish is asked:
// clients retrying on 503 do not turn into a storm of hook calls.
func TestSaturatedAsksNoHook(t *testing.T) {
	load := &fakeLoad{l: admission.Load{CPU: 90}}
	ctrl := admission.New(load.probe, admission.Thresholds{CPU: 50}, nil)
	ctrl.Look()
	hook := &countingHook{calls: map[string]int{}}
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) { s.Admission = ctrl; c.Hooks = hook })
	for path, body := range map[string]string{
		"/base64?key=k&id=h1": base64.StdEncoding.EncodeToString(mp3(3, 1)),
		"/live/h2?key=k":      string(mp3(3, 1)),
	} {
		if r := request(t, "POST", ts.URL+path, strings.NewReader(body)); r.code != http.StatusServiceUnavailable {
			t.Errorf("POST %s while saturated: %d, want 503", path, r.code)
		}
	}
	if _, ce := readUntilClose(t, dialWS(t, ts, "key=k&id=h3", nil)); ce.Code != websocket.CloseTryAgainLater {
		t.Errorf("WebSocket while saturated: close %d, want 1013", ce.Code)
	}
	for _, id := range []string{"h1", "h2", "h3"} {
		if n := hook.count(id); n != 0 {
			t.Errorf("on_publish asked %d times for %s while saturated", n, id)
		}
	}
}
