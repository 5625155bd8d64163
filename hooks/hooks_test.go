package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/session"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// counter is an Observer that counts.
type counter struct {
	mu       sync.Mutex
	calls    map[string]int
	failures map[string]int
	dropped  map[string]int
}

func newCounter() *counter {
	return &counter{calls: map[string]int{}, failures: map[string]int{}, dropped: map[string]int{}}
}

func (c *counter) HookCalled(hook string, _ time.Duration, answered bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[hook]++
	if !answered {
		c.failures[hook]++
	}
}

func (c *counter) HookDropped(hook, cause string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropped[hook+"/"+cause]++
}

func (c *counter) get(m map[string]int, k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m[k]
}

// hookServer answers every call with answer, after verifying it.
func hookServer(t *testing.T, secret string, answer http.HandlerFunc) (*httptest.Server, *[]error) {
	t.Helper()
	v := &Verifier{Secret: []byte(secret)}
	var mu sync.Mutex
	var errs []error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := v.Verify(r.Header, body, time.Now()); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &errs
}

func TestPublishAnswers(t *testing.T) {
	for _, tc := range []struct {
		name        string
		status      int
		ctype, body string
		retryAfter  string
		wantStatus  int // 0: allowed
		wantMsg     string
		want        *session.Overrides
	}{
		{name: "empty 200 allows", status: 200},
		{name: "text 204 allows", status: 204, ctype: "text/plain", body: "OK"},
		{name: "overrides", status: 200, ctype: "application/json",
			body: `{"output":"rtmp://cdn.example/app/KEY","idle_timeout":45,"name":"room-b","extra":1}`,
			want: &session.Overrides{Output: "rtmp://cdn.example/app/KEY", IdleTimeout: 45 * time.Second, Name: "room-b"}},
		{name: "json message", status: 401, ctype: "application/json", body: `{"message":"ticket expired"}`, wantStatus: 403, wantMsg: "ticket expired"},
		{name: "json error", status: 403, body: `{"error":"room closed"}`, wantStatus: 403, wantMsg: "room closed"},
		{name: "plain text", status: 404, ctype: "text/plain", body: "no such room\n", wantStatus: 403, wantMsg: "no such room"},
		{name: "no message", status: 418, wantStatus: 403, wantMsg: "refused by the on_publish hook (status 418)"},
		{name: "429 passes", status: 429, body: `{"message":"slow down"}`, retryAfter: "7", wantStatus: 429, wantMsg: "slow down"},
		{name: "503 passes", status: 503, ctype: "text/plain", body: "maintenance", wantStatus: 503, wantMsg: "maintenance"},
		{name: "redirect refuses", status: 302, wantStatus: 403, wantMsg: "refused by the on_publish hook (status 302)"},
		{name: "control characters", status: 403, ctype: "text/plain", body: "bad\x00 \x1b[31mroom\r\nsee you", wantStatus: 403, wantMsg: "bad [31mroom see you"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, errs := hookServer(t, "s3cret", func(w http.ResponseWriter, r *http.Request) {
				if tc.ctype != "" {
					w.Header().Set("Content-Type", tc.ctype)
				}
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			obs := newCounter()
			h := New(Config{OnPublish: srv.URL, Secret: []byte("s3cret"), Observer: obs}, quiet())
			defer h.Close(context.Background())
			o, err := h.Publish(context.Background(), Publish{ID: "room1", Transport: "base64", Format: "mp3"})
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if (o == nil) != (tc.want == nil) || (o != nil && *o != *tc.want) {
					t.Fatalf("overrides %+v, want %+v", o, tc.want)
				}
			} else {
				var ref *Refusal
				if !errors.As(err, &ref) || ref.Status != tc.wantStatus || ref.Message != tc.wantMsg || ref.RetryAfter != tc.retryAfter {
					t.Fatalf("got %#v, want %d %q", err, tc.wantStatus, tc.wantMsg)
				}
			}
			if len(*errs) > 0 {
				t.Errorf("the call did not verify: %v", *errs)
			}
			wantFailures := 0
			if tc.status >= 500 {
				wantFailures = 1 // counted as the hook's failure, though passed on as it said
			}
			if obs.get(obs.calls, "on_publish") != 1 || obs.get(obs.failures, "on_publish") != wantFailures {
				t.Errorf("observer: %+v", obs)
			}
		})
	}
}

func TestPublishBadAnswersFailClosedOrOpen(t *testing.T) {
	for _, body := range []string{
		`{"output":"http://not-rtmp/x"}`, `{"output":"file:///etc/x"}`, `{"output":"/tmp/x.flv"}`, `{"output":"rtmp://h/a b"}`, `{"name":"../x"}`,
		`{"idle_timeout":-1}`, `{"idle_timeout":1e9}`, `{"output":`,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}))
		for _, open := range []bool{false, true} {
			h := New(Config{OnPublish: srv.URL, FailOpen: open}, quiet())
			o, err := h.Publish(context.Background(), Publish{ID: "room1"})
			h.Close(context.Background())
			if open && (err != nil || o != nil) {
				t.Errorf("%s, open: %v %+v, want allowed without overrides", body, err, o)
			}
			if !open && !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s, closed: %v, want ErrUnavailable", body, err)
			}
		}
		srv.Close()
	}
}

func TestPublishTimeoutAndDown(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + ln.Addr().String() + "/hook"
	ln.Close()
	for _, url := range []string{slow.URL, down} {
		for _, open := range []bool{false, true} {
			obs := newCounter()
			h := New(Config{OnPublish: url, Timeout: 200 * time.Millisecond, FailOpen: open, Observer: obs}, quiet())
			o, err := h.Publish(context.Background(), Publish{ID: "room1"})
			h.Close(context.Background())
			if open && (err != nil || o != nil) {
				t.Errorf("%s open: %v", url, err)
			}
			if !open && !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s closed: %v, want ErrUnavailable", url, err)
			}
			if obs.get(obs.failures, "on_publish") != 1 {
				t.Errorf("%s: failures %+v", url, obs.failures)
			}
		}
	}
	// A client that leaves while the hook thinks is not the hook's failure.
	h := New(Config{OnPublish: slow.URL}, quiet())
	defer h.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Publish(ctx, Publish{ID: "room1"}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled client: %v", err)
	}
}

func TestSignatureDetectsReplayAndTampering(t *testing.T) {
	type call struct {
		h    http.Header
		body []byte
	}
	got := make(chan call, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- call{r.Header.Clone(), b}
	}))
	defer srv.Close()
	h := New(Config{OnPublish: srv.URL, Secret: []byte("s3cret")}, quiet())
	defer h.Close(context.Background())
	if _, err := h.Publish(context.Background(), Publish{ID: "room1", Query: map[string]string{"ticket": "abc"}}); err != nil {
		t.Fatal(err)
	}
	c := <-got
	now := time.Now()
	v := &Verifier{Secret: []byte("s3cret")}
	if err := v.Verify(c.h, c.body, now); err != nil {
		t.Fatalf("a genuine call: %v", err)
	}
	if err := v.Verify(c.h, c.body, now.Add(time.Second)); !errors.Is(err, ErrReplayed) {
		t.Errorf("the same call again: %v, want ErrReplayed", err)
	}
	if err := (&Verifier{Secret: []byte("s3cret")}).Verify(c.h, c.body, now.Add(DefaultMaxAge+2*time.Second)); !errors.Is(err, ErrStale) {
		t.Errorf("the call replayed later: %v, want ErrStale", err)
	}
	altered := []byte(strings.Replace(string(c.body), `"abc"`, `"abd"`, 1))
	if err := (&Verifier{Secret: []byte("s3cret")}).Verify(c.h, altered, now); !errors.Is(err, ErrSignature) {
		t.Errorf("an altered body: %v, want ErrSignature", err)
	}
	moved := c.h.Clone()
	moved.Set(HeaderTimestamp, "1")
	if err := (&Verifier{Secret: []byte("s3cret")}).Verify(moved, c.body, now); !errors.Is(err, ErrSignature) {
		t.Errorf("an altered timestamp: %v, want ErrSignature", err)
	}
	if err := (&Verifier{Secret: []byte("other")}).Verify(c.h, c.body, now); !errors.Is(err, ErrSignature) {
		t.Errorf("another secret: %v, want ErrSignature", err)
	}
	if err := v.Verify(http.Header{}, c.body, now); !errors.Is(err, ErrUnsigned) {
		t.Errorf("no headers: %v, want ErrUnsigned", err)
	}
	// What the README tells a shell hook to compute.
	if want := Signature([]byte("s3cret"), c.h.Get(HeaderTimestamp), c.body); c.h.Get(HeaderSignature) != want {
		t.Errorf("signature %q, want %q", c.h.Get(HeaderSignature), want)
	}
	var p Publish
	if err := json.Unmarshal(c.body, &p); err != nil || p.Event != "on_publish" || p.CallID == "" || p.Query["ticket"] != "abc" {
		t.Errorf("body %s", c.body)
	}
}

// doneServer records on_done bodies; answer decides each call's status.
type doneServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []Figures
	got    chan Figures
}

func newDoneServer(t *testing.T, answer func(n int, r *http.Request) int) *doneServer {
	t.Helper()
	d := &doneServer{got: make(chan Figures, 100)}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var f Figures
		json.NewDecoder(r.Body).Decode(&f)
		d.mu.Lock()
		d.bodies = append(d.bodies, f)
		n := len(d.bodies)
		d.mu.Unlock()
		code := answer(n, r)
		w.WriteHeader(code)
		if code == 200 {
			d.got <- f
		}
	}))
	t.Cleanup(d.Close)
	return d
}

func TestDoneRetriedUntilAnswered(t *testing.T) {
	d := newDoneServer(t, func(n int, _ *http.Request) int {
		if n <= 2 {
			return 500
		}
		return 200
	})
	obs := newCounter()
	h := New(Config{OnDone: d.URL, Observer: obs}, quiet())
	end := time.Now()
	h.done.enqueue(figures("on_done", session.Info{ID: "room1", Bytes: 1234, Seconds: 2.5, Restarts: 1}, &end))
	f := <-d.got
	h.Close(context.Background())
	if f.Attempt != 3 || f.ID != "room1" || f.Bytes != 1234 || f.AudioSeconds != 2.5 || f.Restarts != 1 || f.End == nil {
		t.Errorf("delivered %+v", f)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.bodies) != 3 || d.bodies[0].CallID != f.CallID || d.bodies[0].Attempt != 1 {
		t.Errorf("calls %+v: want three attempts of one call_id", d.bodies)
	}
	if obs.get(obs.calls, "on_done") != 3 || obs.get(obs.failures, "on_done") != 2 {
		t.Errorf("observer %+v", obs)
	}
}

func TestDoneQueueOverflowCountedAndFlushedAtClose(t *testing.T) {
	release := make(chan struct{})
	first := make(chan struct{})
	var once sync.Once
	d := newDoneServer(t, func(n int, r *http.Request) int {
		once.Do(func() { close(first) })
		<-release
		return 200
	})
	obs := newCounter()
	h := New(Config{OnDone: d.URL, QueueSize: 2, Observer: obs}, quiet())
	end := time.Now()
	h.done.enqueue(figures("on_done", session.Info{ID: "s0"}, &end))
	<-first // the worker holds s0; the queue is empty
	for _, id := range []string{"s1", "s2", "s3", "s4"} {
		h.done.enqueue(figures("on_done", session.Info{ID: id}, &end))
	}
	if n := obs.get(obs.dropped, "on_done/overflow"); n != 2 {
		t.Errorf("%d dropped for overflow, want 2", n)
	}
	close(release)
	h.Close(context.Background()) // delivers what is queued
	var ids []string
	for len(d.got) > 0 {
		ids = append(ids, (<-d.got).ID)
	}
	if strings.Join(ids, ",") != "s0,s1,s2" {
		t.Errorf("delivered %v, want s0,s1,s2 in order", ids)
	}
	h.done.enqueue(figures("on_done", session.Info{ID: "late"}, &end))
	if n := obs.get(obs.dropped, "on_done/shutdown"); n != 1 {
		t.Errorf("after Close: %d dropped for shutdown, want 1", n)
	}
}

func TestDoneCloseGivesUpWhenTheHookIsDown(t *testing.T) {
	d := newDoneServer(t, func(int, *http.Request) int { return 503 })
	obs := newCounter()
	h := New(Config{OnDone: d.URL, Observer: obs}, quiet())
	end := time.Now()
	for _, id := range []string{"a", "b", "c"} {
		h.done.enqueue(figures("on_done", session.Info{ID: id}, &end))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	h.Close(ctx)
	if n := obs.get(obs.dropped, "on_done/shutdown"); n != 3 {
		t.Errorf("%d given up at shutdown, want 3", n)
	}
}

// TestShellVerificationInTheREADME: the shell line the README gives
// computes the same signature.
func TestShellVerificationInTheREADME(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	body := []byte(`{"event":"on_done","id":"room1","reason":"it's \"done\"\n"}`)
	cmd := exec.Command("sh", "-c", `printf '%s.%s' "$TIMESTAMP" "$BODY" | openssl dgst -sha256 -hmac "$S" -r | cut -d' ' -f1`)
	cmd.Env = append(os.Environ(), "TIMESTAMP=1764576000", "BODY="+string(body), "S=s3cret")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := "sha256="+strings.TrimSpace(string(out)), Signature([]byte("s3cret"), "1764576000", body); got != want {
		t.Errorf("shell %s, want %s", got, want)
	}
}
