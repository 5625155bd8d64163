package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the server, so that signal tests can
	// SIGTERM and SIGKILL a real process (see startProcess).
	if os.Getenv("FFMPEG_PUBLISHER_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func TestConfigFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{
		"PUBLISHER_RTMP":         "rtmp://env/live",
		"PUBLISHER_KEY":          "envkey",
		"PUBLISHER_IDLE_TIMEOUT": "5s",
		"PUBLISHER_MAX_SESSIONS": "7",
	}
	c, err := parseConfig([]string{"-key", "flagkey", "-listen", ":9000"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Key != "flagkey" || c.RTMP != "rtmp://env/live" || c.IdleTimeout != 5*time.Second ||
		c.MaxSessions != 7 || c.Listen != ":9000" || c.AudioBitrate != "64k" {
		t.Errorf("config = %+v", c)
	}
	for _, bad := range [][]string{{"-audio-codec", "opus"}, {"-ffmpeg-nice", "20"}, {"-ffmpeg-nice", "-1"}, {"-log-format", "xml"}, {"-idle-timeout", "0s"}, {"-ws-read-timeout", "0s"}, {"-legacy-success-errcode", "201"}, {"extra"}} {
		if _, err := parseConfig(bad, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := parseConfig(nil, func(k string) string {
		if k == "PUBLISHER_MAX_BODY" {
			return "lots"
		}
		return ""
	}, io.Discard); err == nil || !strings.Contains(err.Error(), "PUBLISHER_MAX_BODY") {
		t.Errorf("bad environment value: %v", err)
	}
	if _, err := parseConfig([]string{"-upload-directory", "/tmp/x"}, func(string) string { return "" }, io.Discard); err != nil {
		t.Errorf("the deprecated -upload-directory must still be accepted: %v", err)
	}
}

// publisher is the whole server, in process, on a loopback port.
type publisher struct {
	URL    string
	client *http.Client
	cancel context.CancelFunc // starts the shutdown
	done   chan error         // serve's result
	ended  *endedHook         // what each session's end reported
}

// endedHook keeps the silence each ended session reported having fed (gap
// fill): on a loaded machine a client can fall a second behind, and the
// server then rightly adds silence that the recording holds too.
type endedHook struct {
	mu      sync.Mutex
	silence map[string]float64
	lines   map[string][]string // everything logged about each ID
}

// explain logs what the server logged about id, for a failure.
func (p *publisher) explain(t *testing.T, id string) {
	t.Helper()
	p.ended.mu.Lock()
	defer p.ended.mu.Unlock()
	for _, line := range p.ended.lines[id] {
		t.Log("server: " + line)
	}
}

func (h *endedHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *endedHook) Fire(e *logrus.Entry) error {
	id, _ := e.Data["id"].(string)
	if id != "" {
		line, _ := e.String()
		h.mu.Lock()
		h.lines[id] = append(h.lines[id], strings.TrimSpace(line))
		h.mu.Unlock()
	}
	if e.Message != "session ended" {
		return nil
	}
	var sil float64
	if v, ok := e.Data["silence_seconds"].(string); ok {
		sil, _ = strconv.ParseFloat(v, 64)
	}
	h.mu.Lock()
	h.silence[id] = sil
	h.mu.Unlock()
	return nil
}

// silence waits for id's session to end and returns the silence it fed.
func (p *publisher) silence(t *testing.T, id string) time.Duration {
	t.Helper()
	// 20 s: an ending stream may keep trying for endFlush (10 s) to
	// publish held audio.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		p.ended.mu.Lock()
		sil, ok := p.ended.silence[id]
		p.ended.mu.Unlock()
		if ok {
			return time.Duration(sil * float64(time.Second))
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s did not end", id)
		}
	}
}

func startPublisher(t *testing.T, rtmpURL string, mod func(*Config)) *publisher {
	t.Helper()
	// Every test client comes from 127.0.0.1: no per-client limits here.
	cfg, err := parseConfig(append([]string{"-rtmp", rtmpURL, "-key", "secret", "-idle-timeout", "3s", "-rate-requests", "0", "-rate-sessions", "0"}, noAdmission...), func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	if testing.Verbose() {
		log.SetOutput(os.Stderr)
	}
	ended := &endedHook{silence: map[string]float64{}, lines: map[string][]string{}}
	log.AddHook(ended)
	ctx, cancel := context.WithCancel(context.Background())
	p := &publisher{URL: "http://" + ln.Addr().String(), client: &http.Client{Timeout: 30 * time.Second},
		cancel: cancel, done: make(chan error, 1), ended: ended}
	go func() { p.done <- serve(ctx, cfg, ln, logrus.NewEntry(log)) }()
	t.Cleanup(func() {
		cancel()
		if err := p.wait(); err != nil {
			t.Errorf("serve: %v", err)
		}
		p.client.CloseIdleConnections()
	})
	return p
}

// wait returns serve's result once it has returned; call after cancel.
func (p *publisher) wait() error {
	if err, ok := <-p.done; ok {
		close(p.done)
		return err
	}
	return nil
}

type reply struct {
	Errmsg  string  `json:"errmsg"`
	Errcode int     `json:"errcode"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

func (p *publisher) post(t *testing.T, path string, body io.Reader) (int, reply) {
	t.Helper()
	resp, err := p.client.Post(p.URL+path, "text/plain", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("reply: %v", err)
	}
	return resp.StatusCode, r
}

// postRetrying posts body and, while the answer is 503 with Retry-After
// (the stream's buffer full: ffmpeg restarting or behind on a loaded
// machine), posts it again when told, as the README asks of clients.
func (p *publisher) postRetrying(t *testing.T, path, body string) (int, reply) {
	t.Helper()
	code, r := p.post(t, path, strings.NewReader(body))
	for tries := 0; code == 503 && strings.Contains(r.Errmsg, "buffer is full") && tries < 20; tries++ {
		t.Logf("%s: 503 %s; retrying in 1 s", path, r.Errmsg)
		time.Sleep(time.Second)
		code, r = p.post(t, path, strings.NewReader(body))
	}
	return code, r
}

// paced calls send(i) for each of n chunks at the moment chunk i is due in
// real time.
func paced(n int, every time.Duration, send func(i int)) {
	start := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * every)))
		send(i)
	}
}

// postChunks sends chunks as legacy base64 POSTs at real-time pace, the last
// with end=1.
func (p *publisher) postChunks(t *testing.T, id string, chunks [][]byte, every time.Duration) {
	p.postChunksEnd(t, id, chunks, every, true)
}

// postChunksEnd is postChunks; end says whether the last chunk ends the
// stream.
func (p *publisher) postChunksEnd(t *testing.T, id string, chunks [][]byte, every time.Duration, end bool) {
	paced(len(chunks), every, func(i int) {
		q := "/base64?key=secret&id=" + id
		if end && i == len(chunks)-1 {
			q += "&end=1"
		}
		code, r := p.postRetrying(t, q, base64.StdEncoding.EncodeToString(chunks[i]))
		if code != 200 || r.Errcode != 0 || r.Errmsg != "ok" {
			t.Errorf("chunk %d: %d %+v", i, code, r)
		}
	})
}

// splitEvery cuts data into pieces of n bytes, wherever that falls.
func splitEvery(data []byte, n int) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		k := min(n, len(data))
		out = append(out, data[:k])
		data = data[k:]
	}
	return out
}

// checkArrived asserts what the RTMP server recorded for id: one publish
// session, AAC, and the audio that was sent (plus any silence the server
// reported filling gaps with), within 5%.
func checkArrived(t *testing.T, rtmp *rtmptest.Server, p *publisher, id string, sent time.Duration) {
	t.Helper()
	rec := rtmp.WaitRecorded(t, id, 1)
	silence := p.silence(t, id)
	if n := rtmp.PublishCount(id); n != 1 {
		t.Errorf("%s: %d publish sessions at the RTMP server, want 1", id, n)
	}
	if rec.Files != 1 || rec.Codecs != "aac" {
		t.Errorf("%s: recordings %+v, want one AAC file", id, rec)
	}
	want := (sent + silence).Seconds()
	if rec.Duration < want*0.95 || rec.Duration > want*1.05 {
		t.Errorf("%s: recorded %.3f s, sent %.3f s and %.2f s of silence", id, rec.Duration, sent.Seconds(), silence.Seconds())
	} else {
		t.Logf("%s: recorded %.3f s of %.3f s sent and %.2f s of silence (%s, %d Hz)", id, rec.Duration, sent.Seconds(), silence.Seconds(), rec.Codecs, rec.Rate)
	}
}

// TestEndToEnd runs the real server against Debian's ffmpeg and nginx-rtmp
// and checks what the RTMP server received. The streams run in parallel,
// each at real-time pace, which also shows that IDs stay separate.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests take about 15 s")
	}
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx", "curl")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, nil)

	// 16 kHz mono, as mini-program recorders send: 144-byte frames of 36 ms.
	mono16 := rtmptest.MP3(t, 10.08, 16000, 1, "32k", true)

	t.Run("base64 posts of 500 ms", func(t *testing.T) {
		t.Parallel()
		pub.postChunks(t, "posts", splitEvery(mono16, 14*144), 504*time.Millisecond)
		checkArrived(t, rtmp, pub, "posts", session.MP3Duration(mono16))
	})
	t.Run("chunks cut mid-frame, 44.1 kHz stereo", func(t *testing.T) {
		t.Parallel()
		stereo := rtmptest.MP3(t, 10, 44100, 2, "128k", false)
		pub.postChunks(t, "cut", splitEvery(stereo, len(stereo)/20+1), 500*time.Millisecond)
		checkArrived(t, rtmp, pub, "cut", session.MP3Duration(stereo))
	})
	t.Run("every chunk a file with ID3 and Xing", func(t *testing.T) {
		t.Parallel()
		var chunks [][]byte
		var all []byte
		for i := 0; i < 20; i++ {
			c := rtmptest.MP3(t, 0.5, 16000, 1, "32k", false)
			if !bytes.HasPrefix(c, []byte("ID3")) {
				t.Fatal("ffmpeg wrote no ID3 tag")
			}
			chunks = append(chunks, c)
			all = append(all, c...)
		}
		pub.postChunks(t, "files", chunks, 500*time.Millisecond)
		checkArrived(t, rtmp, pub, "files", session.MP3Duration(all))
	})
	t.Run("8 kHz MPEG-2.5", func(t *testing.T) {
		t.Parallel()
		mono8 := rtmptest.MP3(t, 10.08, 8000, 1, "16k", true) // 144-byte frames of 72 ms
		pub.postChunks(t, "mpeg25", splitEvery(mono8, 7*144), 504*time.Millisecond)
		checkArrived(t, rtmp, pub, "mpeg25", session.MP3Duration(mono8))
	})
	t.Run("websocket frames of 100 ms", func(t *testing.T) {
		t.Parallel()
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(pub.URL, "http")+"/ws?id=ws&key=secret", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var reading sync.WaitGroup
		reading.Add(1)
		go drainStatus(c, reading.Done)
		pieces := splitEvery(mono16, 400) // 32 kbps: 400 bytes = 100 ms
		paced(len(pieces), 100*time.Millisecond, func(i int) {
			if err := c.WriteMessage(websocket.BinaryMessage, pieces[i]); err != nil {
				t.Errorf("message %d: %v", i, err)
			}
		})
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		reading.Wait()
		checkArrived(t, rtmp, pub, "ws", session.MP3Duration(mono16))
	})
	t.Run("raw upload from ffmpeg -re", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		in := dir + "/in.mp3"
		data := rtmptest.MP3(t, 10, 22050, 1, "48k", false)
		os.WriteFile(in, data, 0o644)
		out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", in,
			"-c", "copy", "-f", "mp3", "-method", "POST", pub.URL+"/live/ffclient?key=secret").CombinedOutput()
		if err != nil {
			t.Fatalf("ffmpeg client: %v\n%s", err, out)
		}
		checkArrived(t, rtmp, pub, "ffclient", session.MP3Duration(data))
	})
	t.Run("raw upload from curl -T", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		data := rtmptest.MP3(t, 5, 44100, 2, "128k", false)
		os.WriteFile(dir+"/in.mp3", data, 0o644)
		out, err := exec.Command("curl", "-sS", "-T", dir+"/in.mp3", pub.URL+"/live/curl?key=secret").Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		var r reply
		if json.Unmarshal(out, &r); r.Errcode != 0 || r.Bytes != int64(len(data)) || r.Seconds < 4.9 {
			t.Fatalf("curl reply: %s", out)
		}
		checkArrived(t, rtmp, pub, "curl", session.MP3Duration(data))
	})
	t.Run("three ids at once", func(t *testing.T) {
		t.Parallel()
		five := rtmptest.MP3(t, 5.04, 16000, 1, "32k", true)
		var wg sync.WaitGroup
		for _, id := range []string{"multi-a", "multi-b", "multi-c"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pub.postChunks(t, id, splitEvery(five, 14*144), 504*time.Millisecond)
			}()
		}
		wg.Wait()
		for _, id := range []string{"multi-a", "multi-b", "multi-c"} {
			checkArrived(t, rtmp, pub, id, session.MP3Duration(five))
		}
	})
	t.Run("https and wss with a self-signed certificate", func(t *testing.T) {
		t.Parallel()
		cert, key, pool := selfSigned(t)
		sp := startPublisher(t, rtmp.URL, func(c *Config) { c.TLSCert, c.TLSKey = cert, key })
		sp.URL = strings.Replace(sp.URL, "http://", "https://", 1)
		sp.client = tlsClient(pool)
		three := rtmptest.MP3(t, 3.024, 16000, 1, "32k", true)
		sp.postChunks(t, "tls-post", splitEvery(three, 14*144), 504*time.Millisecond)
		checkArrived(t, rtmp, sp, "tls-post", session.MP3Duration(three))

		dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
		c, _, err := dialer.Dial("wss"+strings.TrimPrefix(sp.URL, "https")+"/ws?id=tls-ws&key=secret", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go drainStatus(c, nil)
		pieces := splitEvery(three, 400)
		paced(len(pieces), 100*time.Millisecond, func(i int) { c.WriteMessage(websocket.BinaryMessage, pieces[i]) })
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		checkArrived(t, rtmp, sp, "tls-ws", session.MP3Duration(three))
	})
	t.Run("recorder restarted with another format", func(t *testing.T) {
		t.Parallel()
		first := rtmptest.MP3(t, 3.024, 16000, 1, "32k", false) // a mini-program at 16 kHz mono
		second := rtmptest.MP3(t, 3, 44100, 2, "128k", false)   // restarted at 44.1 kHz stereo
		chunks := append(splitEvery(first, len(first)/6+1), splitEvery(second, len(second)/6+1)...)
		pub.postChunks(t, "reformat", chunks, 500*time.Millisecond)
		rec := rtmp.WaitRecorded(t, "reformat", 2)
		sent := (session.MP3Duration(first) + session.MP3Duration(second) + pub.silence(t, "reformat")).Seconds()
		t.Logf("recorded %.3f s of %.3f s in %d publish sessions (%s)", rec.Duration, sent, rec.Files, rec.Codecs)
		if rec.Files != 2 || rec.Codecs != "aac,aac" || rec.Duration < sent*0.95 || rec.Duration > sent*1.05 {
			t.Errorf("recordings %+v, want two AAC publishes with %.3f s", rec, sent)
		}
	})
	t.Run("websocket webm (opus, as a browser's MediaRecorder sends)", func(t *testing.T) {
		t.Parallel()
		out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=5",
			"-c:a", "libopus", "-b:a", "48k", "-f", "webm", "pipe:1").Output()
		if err != nil {
			t.Fatalf("ffmpeg: %v", err)
		}
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(pub.URL, "http")+"/ws?id=webm&key=secret&format=webm", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go drainStatus(c, nil)
		pieces := splitEvery(out, len(out)/50+1) // 50 pieces of 100 ms
		paced(len(pieces), 100*time.Millisecond, func(i int) { c.WriteMessage(websocket.BinaryMessage, pieces[i]) })
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		checkArrived(t, rtmp, pub, "webm", 5*time.Second)
	})
	t.Run("passthrough with -audio-codec copy", func(t *testing.T) {
		t.Parallel()
		cp := startPublisher(t, rtmp.URL, func(c *Config) { c.AudioCodec = "copy" })
		mp3at44 := rtmptest.MP3(t, 3, 44100, 2, "128k", true)
		cp.postChunks(t, "copy44", splitEvery(mp3at44, len(mp3at44)/6+1), 500*time.Millisecond)
		rec := rtmp.WaitRecorded(t, "copy44", 1)
		if want := (session.MP3Duration(mp3at44) + cp.silence(t, "copy44")).Seconds(); rec.Codecs != "mp3" || math.Abs(rec.Duration-want) > 0.1 {
			t.Errorf("44.1 kHz passthrough: %+v, want MP3 of %.2f s (with silence)", rec, want)
		}
		// FLV cannot say 16 kHz for MP3: that stream is encoded to AAC.
		mono16 := rtmptest.MP3(t, 3.024, 16000, 1, "32k", true)
		cp.postChunks(t, "copy16", splitEvery(mono16, 14*144), 504*time.Millisecond)
		if rec := rtmp.WaitRecorded(t, "copy16", 1); rec.Codecs != "aac" || rec.Duration < 2.9 {
			t.Errorf("16 kHz with copy: %+v, want AAC", rec)
		}
	})
	t.Run("unreachable RTMP server", func(t *testing.T) {
		t.Parallel()
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		dead := "rtmp://" + ln.Addr().String() + "/live"
		ln.Close()
		p := startPublisher(t, dead, nil)
		start := time.Now()
		code, r := p.post(t, "/base64?key=secret&id=nowhere", strings.NewReader(base64.StdEncoding.EncodeToString(mono16[:2016])))
		if code != 502 || r.Errcode != 502 || !strings.Contains(r.Errmsg, "Connection refused") {
			t.Fatalf("got %d %+v, want 502 with ffmpeg's reason", code, r)
		}
		t.Logf("502 after %s: %s", time.Since(start).Round(time.Millisecond), r.Errmsg)
	})
}

// drainStatus reads a WebSocket's status messages until the connection
// ends, then calls done (if not nil).
func drainStatus(c *websocket.Conn, done func()) {
	if done != nil {
		defer done()
	}
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}
