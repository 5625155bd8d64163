package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/hooks"
	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
)

const hookSecret = "hook-secret-for-tests"

// appHook is the operator's application in these tests, on a loopback
// port: it verifies the signature of every call, records it, and answers
// as the test says.
type appHook struct {
	srv      *httptest.Server
	verifier hooks.Verifier

	mu        sync.Mutex // guards the fields below
	publishes []hooks.Publish
	updates   []hooks.Figures
	dones     []hooks.Figures // answered 2xx
	unsigned  []error
	publish   func(hooks.Publish) (int, string)
	update    func(hooks.Figures) (int, string)
	done      func(hooks.Figures) int

	doneCh chan hooks.Figures // every on_done answered 2xx
}

func startAppHook(t *testing.T) *appHook {
	t.Helper()
	h := &appHook{verifier: hooks.Verifier{Secret: []byte(hookSecret)}, doneCh: make(chan hooks.Figures, 100)}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(func() {
		h.srv.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.unsigned) > 0 {
			t.Errorf("hook calls that did not verify: %v", h.unsigned)
		}
	})
	return h
}

func (h *appHook) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := h.verifier.Verify(r.Header, body, time.Now()); err != nil {
		h.mu.Lock()
		h.unsigned = append(h.unsigned, err)
		h.mu.Unlock()
	}
	code, answer := 200, ""
	switch r.URL.Path {
	case "/publish":
		var p hooks.Publish
		json.Unmarshal(body, &p)
		h.mu.Lock()
		h.publishes = append(h.publishes, p)
		f := h.publish
		h.mu.Unlock()
		if f != nil {
			code, answer = f(p)
		}
	case "/update":
		var f hooks.Figures
		json.Unmarshal(body, &f)
		h.mu.Lock()
		h.updates = append(h.updates, f)
		u := h.update
		h.mu.Unlock()
		if u != nil {
			code, answer = u(f)
		}
	case "/done":
		var f hooks.Figures
		json.Unmarshal(body, &f)
		h.mu.Lock()
		d := h.done
		h.mu.Unlock()
		if d != nil {
			code = d(f)
		}
		if code/100 == 2 {
			h.mu.Lock()
			h.dones = append(h.dones, f)
			h.mu.Unlock()
			h.doneCh <- f
		}
	}
	if strings.HasPrefix(answer, "{") {
		w.Header().Set("Content-Type", "application/json")
	}
	if code == 429 || code == 503 {
		w.Header().Set("Retry-After", "3")
	}
	w.WriteHeader(code)
	io.WriteString(w, answer)
}

// set changes the answers under the lock.
func (h *appHook) set(f func(h *appHook)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(h)
}

func (h *appHook) publishCalls() []hooks.Publish {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hooks.Publish(nil), h.publishes...)
}

// doneFor waits for id's on_done and checks that it is the only one.
func (h *appHook) doneFor(t *testing.T, id string, within time.Duration) hooks.Figures {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case f := <-h.doneCh:
			if f.ID == id {
				return f
			}
			h.doneCh <- f // another stream's: leave it for its test
			time.Sleep(10 * time.Millisecond)
		case <-deadline:
			t.Fatalf("no on_done for %s within %s", id, within)
		}
	}
}

func (h *appHook) donesFor(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, f := range h.dones {
		if f.ID == id {
			n++
		}
	}
	return n
}

// withHooks points the server at h's routes.
func withHooks(h *appHook, more func(*Config)) func(*Config) {
	return func(c *Config) {
		c.OnPublish, c.OnUpdate, c.OnDone = h.srv.URL+"/publish", h.srv.URL+"/update", h.srv.URL+"/done"
		c.HookSecret = hookSecret
		c.AdminKey = "admin"
		if more != nil {
			more(c)
		}
	}
}

func b64(p []byte) io.Reader { return strings.NewReader(base64.StdEncoding.EncodeToString(p)) }

// wsRefusal dials /ws and returns the close the server ends with.
func wsRefusal(t *testing.T, url string, hdr http.Header) *websocket.CloseError {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.WriteMessage(websocket.BinaryMessage, []byte("not yet"))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errorsAs(err, &ce) {
				t.Fatalf("ended without a close frame: %v", err)
			}
			return ce
		}
	}
}

func errorsAs(err error, ce **websocket.CloseError) bool {
	e, ok := err.(*websocket.CloseError)
	if ok {
		*ce = e
	}
	return ok
}

// TestHookPublishRefusals: the hook's refusal, its message and its status
// reach the client over every transport, nothing starts for the ID, the
// keys still count, and a hook that does not answer refuses with 503. No
// stream is allowed here: no RTMP server is needed.
func TestHookPublishRefusals(t *testing.T) {
	app := startAppHook(t)
	app.set(func(h *appHook) {
		h.publish = func(p hooks.Publish) (int, string) {
			switch {
			case strings.HasPrefix(p.ID, "busy"):
				return 429, `{"message":"too many streams in this room"}`
			case strings.HasPrefix(p.ID, "slow"):
				time.Sleep(time.Second)
				return 200, ""
			case strings.HasPrefix(p.ID, "text"):
				return 401, "ticket unknown\n"
			}
			return 403, `{"error":"this room is closed"}`
		}
	})
	p := startPublisher(t, "rtmp://127.0.0.1:9/live", withHooks(app, func(c *Config) { c.HookTimeout = 300 * time.Millisecond }))
	ws := "ws" + strings.TrimPrefix(p.URL, "http")
	mp3 := []byte("\xff\xfb\x90\x64" + strings.Repeat("\x00", 413)) // one MPEG-1 frame header is all it takes to be asked

	for _, tc := range []struct{ id, msg string }{{"closed", "this room is closed"}, {"text1", "ticket unknown"}} {
		code, r := p.post(t, "/base64?key=secret&id="+tc.id, b64(mp3))
		if code != 403 || r.Errcode != 403 || r.Errmsg != tc.msg {
			t.Errorf("POST %s: %d %+v, want 403 %q", tc.id, code, r, tc.msg)
		}
		resp, err := p.client.Post(p.URL+"/live/"+tc.id+"?key=secret", "audio/mpeg", strings.NewReader(string(mp3)))
		if err != nil {
			t.Fatal(err)
		}
		var lr reply
		json.NewDecoder(resp.Body).Decode(&lr)
		resp.Body.Close()
		if resp.StatusCode != 403 || lr.Errmsg != tc.msg {
			t.Errorf("/live/%s: %d %+v, want 403 %q", tc.id, resp.StatusCode, lr, tc.msg)
		}
		if ce := wsRefusal(t, ws+"/ws?key=secret&id="+tc.id, nil); ce.Code != websocket.ClosePolicyViolation || ce.Text != tc.msg {
			t.Errorf("/ws %s: close %d %q, want 1008 %q", tc.id, ce.Code, ce.Text, tc.msg)
		}
	}

	// 429 passes with the hook's Retry-After; a WebSocket hears 1013.
	resp, err := p.client.Post(p.URL+"/base64?key=secret&id=busy", "text/plain", b64(mp3))
	if err != nil {
		t.Fatal(err)
	}
	var br reply
	json.NewDecoder(resp.Body).Decode(&br)
	resp.Body.Close()
	if resp.StatusCode != 429 || br.Errmsg != "too many streams in this room" || resp.Header.Get("Retry-After") != "3" {
		t.Errorf("429 from the hook: %d %+v Retry-After %q", resp.StatusCode, br, resp.Header.Get("Retry-After"))
	}
	if ce := wsRefusal(t, ws+"/ws?key=secret&id=busy", nil); ce.Code != websocket.CloseTryAgainLater {
		t.Errorf("/ws busy: close %d %q, want 1013", ce.Code, ce.Text)
	}

	// A hook slower than -hook-timeout: 503 (-hook-fail closed).
	if code, r := p.post(t, "/base64?key=secret&id=slow", b64(mp3)); code != 503 || !strings.Contains(r.Errmsg, "did not answer") {
		t.Errorf("slow hook: %d %+v, want 503", code, r)
	}

	// The key is checked first: a wrong one never reaches the hook.
	before := len(app.publishCalls())
	if code, r := p.post(t, "/base64?key=wrong&id=closed", b64(mp3)); code != 403 || r.Errmsg != "wrong or missing key" {
		t.Errorf("wrong key: %d %+v", code, r)
	}
	if n := len(app.publishCalls()); n != before {
		t.Errorf("a request with a wrong key reached the hook")
	}

	// Nothing started for any refused ID.
	req, _ := http.NewRequest("GET", p.URL+"/streams", nil)
	req.Header.Set("Authorization", "Bearer admin")
	resp, err = p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Streams []session.Info }
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Streams) != 0 {
		t.Errorf("refused requests left streams: %+v", list.Streams)
	}

	// Metrics per hook.
	fams := p.scrape(t)
	calls, fails, lat := labeled(fams, "publisher_hook_calls_total", "on_publish"), labeled(fams, "publisher_hook_failures_total", "on_publish"), 0.0
	for _, m := range fams["publisher_hook_latency_seconds"].GetMetric() {
		lat += float64(m.GetHistogram().GetSampleCount())
	}
	if want := float64(len(app.publishCalls())); calls != want || fails != 1 || lat != want {
		t.Errorf("metrics: %v calls, %v failures, %v latencies; want %v calls (the hook's count), 1 failure (the slow one)", calls, fails, lat, want)
	}
}

// labeled returns a counter's value for hook="hook".
func labeled(fams map[string]*dto.MetricFamily, name, hook string) float64 {
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "hook" && l.GetValue() == hook {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestHookPublishSeesTheClient: the hook gets the ID, transport, format,
// query (without the server's key), User-Agent, Origin and the client's
// address, behind a trusted proxy the one it names; with -hook-only the
// hook alone decides.
func TestHookPublishSeesTheClient(t *testing.T) {
	app := startAppHook(t)
	app.set(func(h *appHook) { h.publish = func(hooks.Publish) (int, string) { return 403, "no" } })
	p := startPublisher(t, "rtmp://127.0.0.1:9/live", withHooks(app, func(c *Config) { c.TrustedProxies = "127.0.0.1" }))
	mp3 := []byte("\xff\xfb\x90\x64" + strings.Repeat("\x00", 413))

	req, _ := http.NewRequest("POST", p.URL+"/base64?key=secret&id=room7&ticket=T-42&seq=0", b64(mp3))
	req.Header.Set("User-Agent", "mini-program/1.0")
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("X-Forwarded-For", "198.51.100.1, 203.0.113.9") // the client wrote the first, the proxy the second
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	pcm, _ := http.NewRequest("POST", p.URL+"/base64?key=secret&id=room6&format=pcm&rate=16000&channels=1", b64(make([]byte, 640)))
	if resp, err := p.client.Do(pcm); err == nil {
		resp.Body.Close()
	}
	hdr := http.Header{"X-Forwarded-For": {"203.0.113.10"}, "Origin": {"http://" + strings.TrimPrefix(p.URL, "http://")}}
	wsRefusal(t, "ws"+strings.TrimPrefix(p.URL, "http")+"/ws?key=secret&id=room8&format=webm&room=blue", hdr)

	calls := app.publishCalls()
	if len(calls) != 3 {
		t.Fatalf("%d on_publish calls, want 3", len(calls))
	}
	if c := calls[1]; c.ID != "room6" || c.Format != "pcm" || c.FormatParams["rate"] != 16000 || c.FormatParams["channels"] != 1 {
		t.Errorf("PCM: %+v", c)
	}
	c := calls[0]
	if c.Event != "on_publish" || c.ID != "room7" || c.Transport != "base64" || c.Format != "mp3" || c.Addr != "203.0.113.9" ||
		c.UserAgent != "mini-program/1.0" || c.Origin != "https://app.example.com" || c.CallID == "" ||
		c.Query["ticket"] != "T-42" || c.Query["seq"] != "0" || c.Query["id"] != "room7" {
		t.Errorf("POST: %+v", c)
	}
	if _, leaked := c.Query["key"]; leaked {
		t.Errorf("the server's key reached the hook: %+v", c.Query)
	}
	if c := calls[2]; c.ID != "room8" || c.Transport != "websocket" || c.Format != "webm" || c.Addr != "203.0.113.10" || c.Query["room"] != "blue" {
		t.Errorf("WebSocket: %+v", c)
	}

	// Not behind a proxy: the peer's address, with its port.
	q := startPublisher(t, "rtmp://127.0.0.1:9/live", withHooks(app, func(c *Config) { c.HookOnly = true }))
	code, r := q.post(t, "/base64?id=room9&key=anything", b64(mp3))
	if code != 403 || r.Errmsg != "no" {
		t.Errorf("-hook-only, refused by the hook: %d %+v", code, r)
	}
	calls = app.publishCalls()
	if c := calls[len(calls)-1]; c.Addr != "127.0.0.1" || !strings.HasPrefix(c.Remote, "127.0.0.1:") || c.Query["key"] != "anything" {
		t.Errorf("-hook-only: %+v (the hook decides alone, so it sees key=)", c)
	}
}

// TestHookPublishAllowsAndOverrides runs real streams: the hook's answer
// sends one to another output and renames another; a hook that is down
// refuses (closed) or lets streams start (open); on_done reports each
// stream once, with its figures, and the output's secret shows nowhere.
func TestHookPublishAllowsAndOverrides(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	app := startAppHook(t)
	app.set(func(h *appHook) {
		h.publish = func(p hooks.Publish) (int, string) {
			switch p.ID {
			case "moved":
				return 200, fmt.Sprintf(`{"output":%q,"idle_timeout":2}`, rtmp.URL+"/landed?secret=hunter2")
			case "renamed":
				return 200, fmt.Sprintf(`{"output":%q,"name":"newname"}`, rtmp.URL+"/{id}")
			}
			return 204, ""
		}
	})
	// -rtmp goes nowhere: only the hook's answer gets "moved" published.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "rtmp://" + ln.Addr().String() + "/live"
	ln.Close()
	p := startPublisher(t, dead, withHooks(app, nil))
	audio := rtmptest.MP3(t, 3.024, 16000, 1, "32k", true)
	chunks := splitEvery(audio, 14*144)

	t.Run("output", func(t *testing.T) {
		t.Parallel()
		p.postChunksEnd(t, "moved", chunks, 504*time.Millisecond, false) // ends by the hook's idle timeout
		rec := rtmp.WaitRecorded(t, "landed", 1)
		if rec.Files != 1 || rec.Duration < 2.8 {
			t.Errorf("recorded at the hook's output: %+v", rec)
		}
		f := app.doneFor(t, "moved", 20*time.Second)
		if f.Cause != "idle" || f.Reason != "idle for 2s" {
			t.Errorf("the hook's idle timeout did not apply: %+v", f)
		}
		if len(f.Outputs) != 1 || strings.Contains(f.Outputs[0], "hunter2") || strings.Contains(f.Outputs[0], "landed") {
			t.Errorf("outputs %v: the hook's URL is shown by scheme and host only", f.Outputs)
		}
		p.ended.mu.Lock()
		defer p.ended.mu.Unlock()
		for _, line := range p.ended.lines["moved"] {
			if strings.Contains(line, "hunter2") {
				t.Errorf("a log line shows the output's secret: %s", line)
			}
		}
	})
	t.Run("name", func(t *testing.T) {
		t.Parallel()
		p.postChunks(t, "renamed", chunks, 504*time.Millisecond)
		if rec := rtmp.WaitRecorded(t, "newname", 1); rec.Files != 1 {
			t.Errorf("recorded under the hook's name: %+v", rec)
		}
		f := app.doneFor(t, "renamed", 20*time.Second)
		if len(f.Outputs) != 1 || f.Outputs[0] != rtmp.URL+"/newname" {
			t.Errorf("outputs %v", f.Outputs)
		}
	})
	t.Run("down", func(t *testing.T) {
		t.Parallel()
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		gone := "http://" + ln.Addr().String() + "/publish"
		ln.Close()
		closed := startPublisher(t, rtmp.URL, func(c *Config) { c.OnPublish = gone })
		if code, r := closed.post(t, "/base64?key=secret&id=down-closed", b64(chunks[0])); code != 503 {
			t.Errorf("hook down, closed: %d %+v", code, r)
		}
		open := startPublisher(t, rtmp.URL, func(c *Config) { c.OnPublish, c.HookFail = gone, "open" })
		if code, r := open.post(t, "/base64?key=secret&id=down-open&end=1", b64(chunks[0])); code != 200 {
			t.Errorf("hook down, open: %d %+v", code, r)
		}
	})
}

// TestHookDone: on_done arrives once per stream with its figures: a plain
// stream, one whose ffmpeg was killed (a restart), one whose hook was down
// for 5 s (retried), and one ended by a drain at shutdown.
func TestHookDone(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	app := startAppHook(t)
	p := startPublisher(t, rtmp.URL, withHooks(app, nil))
	audio := rtmptest.MP3(t, 3.024, 16000, 1, "32k", true)
	sent := session.MP3Duration(audio).Seconds()

	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		p.postChunks(t, "done-plain", splitEvery(audio, 14*144), 504*time.Millisecond)
		f := app.doneFor(t, "done-plain", 20*time.Second)
		if f.Bytes != int64(len(audio)) || f.AudioSeconds < sent-0.01 || f.AudioSeconds > sent+0.01 || f.Restarts != 0 ||
			f.DroppedBytes != 0 || f.Cause != "client" || f.Reason != "ended by the client" || f.End == nil ||
			f.Start.Before(start.Add(-time.Second)) || !f.End.After(f.Start) || len(f.Outputs) != 1 || f.Outputs[0] != rtmp.URL+"/done-plain" || f.Attempt != 1 {
			t.Errorf("on_done %+v; sent %d bytes, %.3f s", f, len(audio), sent)
		}
	})
	t.Run("restart", func(t *testing.T) {
		t.Parallel()
		long := rtmptest.MP3(t, 5.04, 16000, 1, "32k", true)
		killed := false
		wsStream(t, p, "done-kill", long, func(i int) {
			if info, _ := p.streamInfo(t, "done-kill"); !killed && i >= 10 && info.FFmpeg == "publishing" {
				syscall.Kill(info.PID, syscall.SIGKILL)
				killed = true
			}
		})
		if !killed {
			t.Fatal("the stream never published")
		}
		f := app.doneFor(t, "done-kill", 25*time.Second)
		if f.Restarts != 1 || f.Bytes != int64(len(long)) || f.Cause != "client" {
			t.Errorf("on_done after a kill: %+v", f)
		}
	})
	t.Run("hook down 5 s", func(t *testing.T) {
		t.Parallel()
		var downSince time.Time // guarded by app.mu, under which h.done is not called: its own lock
		var mu sync.Mutex
		app.set(func(h *appHook) {
			h.done = func(f hooks.Figures) int {
				if f.ID != "done-retry" {
					return 200
				}
				mu.Lock()
				defer mu.Unlock()
				if downSince.IsZero() {
					downSince = time.Now()
				}
				if time.Since(downSince) < 5*time.Second {
					return 503
				}
				return 200
			}
		})
		p.postChunks(t, "done-retry", splitEvery(audio, 14*144), 504*time.Millisecond)
		f := app.doneFor(t, "done-retry", 30*time.Second)
		if f.Attempt < 2 || f.Bytes != int64(len(audio)) {
			t.Errorf("on_done after the hook came back: %+v", f)
		}
		t.Logf("delivered at attempt %d", f.Attempt)
	})
	t.Run("drain", func(t *testing.T) {
		t.Parallel()
		d := startPublisher(t, rtmp.URL, withHooks(app, func(c *Config) { c.DrainDelay = 5 * time.Second }))
		chunks := splitEvery(audio, 14*144)
		d.postChunksEnd(t, "done-drain", chunks[:4], 504*time.Millisecond, false)
		d.cancel() // SIGTERM: drain; the client has gone, so the stream ends as drained
		if err := d.wait(); err != nil {
			t.Fatal(err)
		}
		f := app.doneFor(t, "done-drain", time.Second) // delivered before the server exited
		if f.Cause != "shutdown" || !strings.Contains(f.Reason, "drained") {
			t.Errorf("on_done after a drain: %+v", f)
		}
	})
	t.Cleanup(func() {
		for _, id := range []string{"done-plain", "done-kill", "done-retry", "done-drain"} {
			if n := app.donesFor(id); n > 1 {
				t.Errorf("%s: %d on_done calls answered, want 1", id, n)
			}
		}
	})
}

// TestHookUpdateRevokes: on_update calls come every -hook-interval with the
// figures so far; the first refusal ends a WebSocket stream (close 1008
// with the hook's message) and a POST stream (403 to its next POST), and
// the next request for the ID is refused too.
func TestHookUpdateRevokes(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	app := startAppHook(t)
	var rmu sync.Mutex // guards revoked and refusals
	revoked := map[string]bool{}
	refusals := map[string]int{}
	app.set(func(h *appHook) {
		h.update = func(f hooks.Figures) (int, string) {
			rmu.Lock()
			defer rmu.Unlock()
			if revoked[f.ID] {
				refusals[f.ID]++
				return 402, `{"message":"out of credit"}`
			}
			return 200, ""
		}
	})
	revoke := func(id string) { rmu.Lock(); revoked[id] = true; rmu.Unlock() }
	updatesFor := func(id string) (n int, last hooks.Figures) {
		app.mu.Lock()
		defer app.mu.Unlock()
		for _, f := range app.updates {
			if f.ID == id {
				n, last = n+1, f
			}
		}
		return n, last
	}
	p := startPublisher(t, rtmp.URL, withHooks(app, func(c *Config) { c.HookInterval = time.Second }))
	audio := rtmptest.MP3(t, 10.08, 16000, 1, "32k", true)

	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.URL, "http")+"/ws?key=secret&id=upd-ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		closed := make(chan *websocket.CloseError, 1)
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					ce, _ := err.(*websocket.CloseError)
					closed <- ce
					return
				}
			}
		}()
		pieces := splitEvery(audio, 400) // 100 ms each
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var ce *websocket.CloseError
		for i, ended := 0, false; !ended; i++ {
			if i == len(pieces) {
				t.Fatal("the stream was not revoked while it lasted")
			}
			if n, last := updatesFor("upd-ws"); n >= 2 && last.Bytes > 0 {
				revoke("upd-ws")
			}
			c.WriteMessage(websocket.BinaryMessage, pieces[i])
			select {
			case ce = <-closed:
				ended = true
			case <-tick.C:
			}
		}
		if ce == nil || ce.Code != websocket.ClosePolicyViolation || ce.Text != "out of credit" {
			t.Errorf("close %+v, want 1008 \"out of credit\"", ce)
		}
		if ce := wsRefusal(t, "ws"+strings.TrimPrefix(p.URL, "http")+"/ws?key=secret&id=upd-ws", nil); ce.Code != websocket.ClosePolicyViolation || ce.Text != "out of credit" {
			t.Errorf("reconnecting: close %+v, want 1008 \"out of credit\"", ce)
		}
	})
	t.Run("post", func(t *testing.T) {
		t.Parallel()
		chunks := splitEvery(audio, 14*144)
		refused := -1
		start := time.Now()
		for i := 0; i < len(chunks) && refused < 0; i++ {
			time.Sleep(time.Until(start.Add(time.Duration(i) * 504 * time.Millisecond)))
			if n, _ := updatesFor("upd-post"); n >= 2 {
				revoke("upd-post")
			}
			code, r := p.postRetrying(t, "/base64?key=secret&id=upd-post", base64.StdEncoding.EncodeToString(chunks[i]))
			switch {
			case code == 403 && r.Errmsg == "out of credit":
				refused = i
			case code != 200:
				t.Errorf("chunk %d: %d %+v", i, code, r)
			}
		}
		if refused < 0 {
			t.Fatal("no POST was refused after the revocation")
		}
	})
	t.Cleanup(func() {
		for _, id := range []string{"upd-ws", "upd-post"} {
			f := app.doneFor(t, id, 20*time.Second)
			rmu.Lock()
			n := refusals[id]
			rmu.Unlock()
			if f.Cause != "revoked" || f.Reason != "out of credit" || n != 1 {
				t.Errorf("%s: on_done %+v after %d refusals; want revoked at the first refusal, within one interval", id, f, n)
			}
		}
		_, last := updatesFor("upd-post")
		if last.Event != "on_update" || last.Bytes == 0 || last.AudioSeconds == 0 || last.End != nil {
			t.Errorf("on_update figures: %+v", last)
		}
	})
}

func TestHookFlags(t *testing.T) {
	env := map[string]string{"PUBLISHER_ON_DONE": "http://app/done", "PUBLISHER_HOOK_FAIL": "open"}
	c, err := parseConfig([]string{"-on-publish", "https://app/publish", "-hook-only", "-hook-timeout", "500ms"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.OnPublish != "https://app/publish" || c.OnDone != "http://app/done" || !c.HookOnly || c.HookFail != "open" ||
		c.HookTimeout != 500*time.Millisecond || c.HookInterval != 30*time.Second {
		t.Errorf("config %+v", c)
	}
	for _, bad := range [][]string{
		{"-hook-only"}, {"-on-publish", "ftp://app/x"}, {"-on-done", "app/done"}, {"-hook-fail", "maybe"},
		{"-hook-timeout", "0s"}, {"-hook-interval", "-1s"},
	} {
		if _, err := parseConfig(bad, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestHookLoad measures what a 50 ms on_publish hook adds to the time a
// stream takes to go live (its first POST is answered once ffmpeg has
// opened the publish). Two servers run side by side, one with the hook,
// and every stream starts as a pair, one on each, so that the load of a
// shared machine falls on both alike: 100 pairs at 2 per second, and 50
// pairs at once (-max-starting 2 each, as the README advises for herds).
// A measurement, not a check: it runs with HOOK_LOAD=1 (make hookload),
// numbers in BENCHMARKS.md.
func TestHookLoad(t *testing.T) {
	if os.Getenv("HOOK_LOAD") == "" {
		t.Skip("set HOOK_LOAD=1 (make hookload): about two minutes")
	}
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	app := startAppHook(t)
	app.set(func(h *appHook) {
		h.publish = func(hooks.Publish) (int, string) { time.Sleep(50 * time.Millisecond); return 204, "" }
	})
	body := base64.StdEncoding.EncodeToString(rtmptest.MP3(t, 0.504, 16000, 1, "32k", true))
	var failed atomic.Int32 // timeouts and refusals of an overloaded machine: counted, not failures of the test
	golive := func(p *publisher, id string) time.Duration {
		t0 := time.Now()
		resp, err := p.client.Post(p.URL+"/base64?key=secret&end=1&id="+id, "text/plain", strings.NewReader(body))
		took := time.Since(t0)
		if err != nil {
			failed.Add(1)
			return took
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			failed.Add(1)
		}
		return took
	}
	summary := func(d []time.Duration) string {
		slices.Sort(d)
		n := len(d)
		return fmt.Sprintf("median %6s  p90 %6s  max %6s", d[n/2].Round(time.Millisecond), d[n*9/10].Round(time.Millisecond), d[n-1].Round(time.Millisecond))
	}
	for _, sc := range []struct {
		name        string
		pairs       int
		every       time.Duration
		maxStarting int
	}{{"paced", 100, 500 * time.Millisecond, 0}, {"burst", 50, 0, 2}} {
		plain := startPublisher(t, rtmp.URL, func(c *Config) { c.MaxStarting = sc.maxStarting })
		hooked := startPublisher(t, rtmp.URL, func(c *Config) {
			c.MaxStarting = sc.maxStarting
			c.OnPublish, c.HookSecret = app.srv.URL+"/publish", hookSecret
		})
		tookPlain, tookHook, extra := make([]time.Duration, sc.pairs), make([]time.Duration, sc.pairs), make([]time.Duration, sc.pairs)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range sc.pairs {
			time.Sleep(time.Until(start.Add(time.Duration(i) * sc.every)))
			wg.Add(2)
			go func() { defer wg.Done(); tookPlain[i] = golive(plain, fmt.Sprintf("%s-plain-%d", sc.name, i)) }()
			go func() { defer wg.Done(); tookHook[i] = golive(hooked, fmt.Sprintf("%s-hook-%d", sc.name, i)) }()
		}
		wg.Wait()
		for i := range extra {
			extra[i] = tookHook[i] - tookPlain[i]
		}
		for _, m := range hooked.scrape(t)["publisher_hook_latency_seconds"].GetMetric() {
			if h := m.GetHistogram(); h.GetSampleCount() > 0 {
				t.Logf("%s: on_publish calls %d, mean %s", sc.name, h.GetSampleCount(),
					time.Duration(h.GetSampleSum()/float64(h.GetSampleCount())*float64(time.Second)).Round(100*time.Microsecond))
			}
		}
		t.Logf("%s without the hook: %s", sc.name, summary(tookPlain))
		t.Logf("%s with the hook:    %s", sc.name, summary(tookHook))
		t.Logf("%s, per pair, hook minus plain: %s; %d requests failed or timed out", sc.name, summary(extra), failed.Swap(0))
		plain.cancel()
		hooked.cancel()
		plain.wait()
		hooked.wait()
	}
}
