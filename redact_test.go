package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"
)

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDebugPublisher is the server in process, logging at debug into logs.
// stop ends it and returns once every session and ffmpeg has ended.
func startDebugPublisher(t *testing.T, rtmpURL string, logs io.Writer) (p *publisher, stop func()) {
	t.Helper()
	cfg, err := parseConfig([]string{"-rtmp", rtmpURL, "-key", "secret", "-admin-key", "admin", "-idle-timeout", "3s",
		"-rate-requests", "0", "-rate-sessions", "0", "-admit-lag", "0", "-admit-starting", "0", "-admit-cpu", "0"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(logs)
	log.SetLevel(logrus.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	p = &publisher{URL: "http://" + ln.Addr().String(), client: &http.Client{Timeout: 30 * time.Second},
		cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- serve(ctx, cfg, ln, logrus.NewEntry(log)) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := p.wait(); err != nil {
				t.Errorf("serve: %v", err)
			}
			p.client.CloseIdleConnections()
		})
	}
	t.Cleanup(stop)
	return p, stop
}

// closingServer accepts TCP connections and closes them at once: an RTMP
// server that turns a publisher away before the handshake.
func closingServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// TestTargetSecretsStayInside: with a secret in the RTMP target's query, in
// its path after the live ID, joined to the ID as CDNs do, or in userinfo,
// and an RTMP server that refuses the publish, the secret reaches no HTTP
// reply, WebSocket message or close reason, /streams entry, metric, or log
// line at any level; the target is shown up to the ID.
func TestTargetSecretsStayInside(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "nginx")
	nginx := rtmptest.Start(t) // has only the application "live"
	closing := closingServer(t)
	refusing := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	const pace = 200 * time.Millisecond
	pieces := splitEvery(rtmptest.MP3(t, 2, 16000, 1, "32k", true), 800) // 200 ms each at 32 kbps
	for _, tc := range []struct {
		name, rtmp string
		secrets    []string
	}{
		{"query, connection closed", "rtmp://" + closing + "/live/{id}?secret=hunter2", []string{"hunter2"}},
		{"query, connection refused", "rtmp://" + refusing + "/live/{id}?secret=hunter2&x=1", []string{"hunter2"}},
		{"path after the ID, no such application", "rtmp://" + nginx.Addr + "/live/{id}/KEYSECRET1", []string{"KEYSECRET1"}},
		{"CDN key after the ID, no such application", "rtmp://" + nginx.Addr + "/live2/{id}KEYSECRET2", []string{"KEYSECRET2"}},
		{"userinfo, connection closed", "rtmp://publisher:pa55%40word@" + closing + "/live/{id}", []string{"pa55", "publisher:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			p, stop := startDebugPublisher(t, tc.rtmp, &logs)
			seen := map[string]string{} // where → what the outside saw

			// POSTs at real-time pace until the failure is reported (a
			// first chunk may be answered before the publish fails).
			var code int
			var r reply
			for i, deadline := 0, time.Now().Add(30*time.Second); time.Now().Before(deadline); i++ {
				piece := pieces[i%len(pieces)]
				if code, r = p.post(t, "/base64?key=secret&id=viapost", strings.NewReader(base64.StdEncoding.EncodeToString(piece))); code != http.StatusOK {
					break
				}
				time.Sleep(pace)
			}
			if code != http.StatusBadGateway || !strings.Contains(r.Errmsg, "/viapost…") && !strings.Contains(r.Errmsg, "…@") {
				t.Errorf("POST: %d %q, want 502 with the redacted target", code, r.Errmsg)
			}
			seen["POST reply"] = r.Errmsg
			seen["/streams"] = p.get(t, "/streams")
			if !strings.Contains(seen["/streams"], `"last_error"`) {
				t.Errorf("/streams has no last_error to check: %s", seen["/streams"])
			}
			seen["WebSocket"] = wsUntilClosed(t, p, "viaws", pieces)
			if !strings.Contains(seen["WebSocket"], "close 1011") {
				t.Errorf("WebSocket: %s, want a close 1011 with ffmpeg's reason", seen["WebSocket"])
			}
			seen["/metrics"] = p.get(t, "/metrics")
			stop()
			seen["log"] = logs.String()
			if testing.Verbose() {
				t.Log(seen["log"])
			}
			if !strings.Contains(seen["log"], "level=debug msg=ffmpeg") || !strings.Contains(seen["log"], "…") {
				t.Errorf("the debug log holds no redacted ffmpeg line:\n%s", seen["log"])
			}
			for where, text := range seen {
				for _, s := range tc.secrets {
					if strings.Contains(text, s) {
						t.Errorf("%s holds %q:\n%s", where, s, text)
					}
				}
			}
		})
	}
}

func (p *publisher) get(t *testing.T, path string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", p.URL+path, nil)
	req.Header.Set("Authorization", "Bearer admin")
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// wsUntilClosed streams pieces of audio over a WebSocket at real-time pace,
// round and round, until the server closes it, and returns every message
// it sent and its close frame.
func wsUntilClosed(t *testing.T, p *publisher, id string, pieces [][]byte) string {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.URL, "http")+"/ws?key=secret&id="+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			if c.WriteMessage(websocket.BinaryMessage, pieces[i%len(pieces)]) != nil {
				return
			}
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	var got strings.Builder
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				got.WriteString("close " + ce.Error() + "\n")
			} else {
				got.WriteString("read: " + err.Error() + "\n")
			}
			return got.String()
		}
		got.Write(msg)
		got.WriteByte('\n')
	}
}
