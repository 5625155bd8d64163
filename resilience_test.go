package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
)

// Tests that break things on purpose around live streams: the RTMP server
// restarts or freezes, ffmpeg is killed, the client pauses, the server is
// stopped with SIGTERM or SIGKILL, many streams run at once.

// streamInfo asks the stream API (admin key "admin") about id.
func (p *publisher) streamInfo(t *testing.T, id string) (session.Info, bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", p.URL+"/streams/"+id, nil)
	req.Header.Set("Authorization", "Bearer admin")
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Stream session.Info `json:"stream"`
	}
	json.NewDecoder(resp.Body).Decode(&r)
	return r.Stream, resp.StatusCode == 200
}

// wsStream sends audio over a WebSocket in pieces of 200 ms at real-time
// pace (32 kbps: 800 bytes), calling at(i) before piece i, and closes with
// 1000 at the end.
func wsStream(t *testing.T, p *publisher, id string, audio []byte, at func(i int)) {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.URL, "http")+"/ws?key=secret&id="+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go drainStatus(c, func() { close(done) })
	pieces := splitEvery(audio, 800)
	paced(len(pieces), 200*time.Millisecond, func(i int) {
		if at != nil {
			at(i)
		}
		if err := c.WriteMessage(websocket.BinaryMessage, pieces[i]); err != nil {
			t.Errorf("piece %d: %v", i, err)
		}
	})
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	<-done
}

// noZombies fails if a child of this process is a zombie (exited, not
// reaped).
func noZombies(t *testing.T) {
	t.Helper()
	for _, c := range childrenOf(os.Getpid()) {
		if c.state == "Z" && c.comm == "ffmpeg" {
			t.Errorf("zombie child %d %s", c.pid, c.comm)
		}
	}
}

func TestRTMPServerRestartMidStream(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.AdminKey = "admin" })
	audio := rtmptest.MP3(t, 30.24, 16000, 1, "32k", true)
	var backAt, republishedAt time.Time
	outage := make(chan struct{})
	go func() {
		defer close(outage)
		// 3 s into the publish: on a loaded machine ffmpeg's first start
		// can take seconds, and an RTMP server gone before a stream ever
		// went live is a 502, not this test.
		for deadline := time.Now().Add(10 * time.Second); rtmp.PublishCount("restart") < 1 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(3 * time.Second)
		before := rtmp.PublishCount("restart")
		rtmp.Stop()
		time.Sleep(3 * time.Second)
		rtmp.Restart(t)
		backAt = time.Now()
		for deadline := backAt.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if rtmp.PublishCount("restart") > before {
				republishedAt = time.Now()
				return
			}
		}
	}()
	// The client streams until 3 s after the republish (or the audio
	// runs out), so that the outage is always mid-stream.
	chunks := splitEvery(audio, 14*144)
	var sent time.Duration
	var stopAt time.Time
	for i, start := 0, time.Now(); i < len(chunks); i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * 504 * time.Millisecond)))
		select {
		case <-outage:
			if stopAt.IsZero() {
				stopAt = time.Now().Add(3 * time.Second)
			}
		default:
		}
		last := i == len(chunks)-1 || (!stopAt.IsZero() && time.Now().After(stopAt))
		q := "/base64?key=secret&id=restart"
		if last {
			q += "&end=1"
		}
		if code, r := p.postRetrying(t, q, base64.StdEncoding.EncodeToString(chunks[i])); code != 200 {
			t.Fatalf("chunk %d: %d %+v", i, code, r)
		}
		sent += session.MP3Duration(chunks[i])
		if last {
			break
		}
	}
	<-outage
	if republishedAt.IsZero() {
		t.Fatal("the stream was not published again after the RTMP server came back")
	}
	took := republishedAt.Sub(backAt)
	t.Logf("republished %s after nginx was back", took.Round(time.Millisecond))
	// The backoff caps retries at 2 s; then an ffmpeg start, which on a
	// loaded machine takes seconds (the log line has the number).
	if took > 6*time.Second {
		t.Errorf("republished %s after nginx was back, want within 2 s and an ffmpeg start", took)
	}
	rec := rtmp.WaitRecorded(t, "restart", 2)
	t.Logf("recorded %.3f s in %d publish sessions of %.3f s sent", rec.Duration, rec.Files, sent.Seconds())
	// The audio that arrived during the outage was held and sent after it,
	// and what the failed ffmpeg had not sent was written again; what
	// was in TCP buffers and nginx when it went away is gone (measured
	// here about 0.3 s).
	if rec.Duration < sent.Seconds()-1.0 {
		t.Errorf("recorded %.3f s of %.3f s sent", rec.Duration, sent.Seconds())
	}
	noZombies(t)
}

// TestFrozenRTMPServer freezes nginx-rtmp (SIGSTOP) for 12 s mid-stream.
// The stall is detected (the server stops reading ffmpeg's connection) and
// reported; TCP buffers on both ends take what ffmpeg sends meanwhile, so
// the publish survives with the same ffmpeg and nothing is lost.
func TestFrozenRTMPServer(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.AdminKey = "admin" })
	audio := rtmptest.MP3(t, 24, 16000, 1, "32k", true)
	var frozenAt, detectedAt, resumedAt, publishingAt time.Time
	var frozenPID int
	freeze := -1 // the piece at which nginx froze: 3 s into the stream, once it was published
	wsStream(t, p, "frozen", audio, func(i int) {
		switch {
		case freeze < 0 && i >= 15 && i <= 35:
			// Published in the session's eyes: its stall clock runs.
			if info, _ := p.streamInfo(t, "frozen"); info.FFmpeg == "publishing" {
				freeze = i
				frozenPID = info.PID
				rtmp.Signal(syscall.SIGSTOP)
				frozenAt = time.Now()
			}
		case freeze < 0:
		case i > freeze && i < freeze+60 && detectedAt.IsZero():
			if info, _ := p.streamInfo(t, "frozen"); info.Upstream == "not answering" && strings.Contains(info.LastError, "stalled") {
				detectedAt = time.Now()
			}
		case i == freeze+60: // 12 s later: detection takes the stall timeout and up to two checks
			rtmp.Signal(syscall.SIGCONT)
			resumedAt = time.Now()
		case i > freeze+60 && publishingAt.IsZero():
			if info, _ := p.streamInfo(t, "frozen"); info.FFmpeg == "publishing" && info.Upstream == "" {
				publishingAt = time.Now()
			}
		}
	})
	if freeze < 0 {
		t.Fatal("the stream was not published within 7 s")
	}
	if detectedAt.IsZero() {
		t.Error("the stall was not detected while nginx was frozen")
	} else {
		t.Logf("stall detected %s after nginx froze", detectedAt.Sub(frozenAt).Round(time.Millisecond))
	}
	if publishingAt.IsZero() {
		t.Fatal("not publishing (with the server answering) after nginx resumed")
	}
	t.Logf("publishing %s after nginx resumed", publishingAt.Sub(resumedAt).Round(time.Millisecond))
	info, _ := p.streamInfo(t, "frozen")
	rec := rtmp.WaitRecorded(t, "frozen", 1)
	sent := session.MP3Duration(audio).Seconds()
	t.Logf("recorded %.3f s of %.3f s in %d publish session(s); ffmpeg pid %d before, %d after", rec.Duration, sent, rec.Files, frozenPID, info.PID)
	if rec.Duration < sent-0.5 {
		t.Errorf("recorded %.3f s of %.3f s sent across the freeze", rec.Duration, sent)
	}
	noZombies(t)
}

func TestKilledFFmpegIsReplaced(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.AdminKey = "admin" })
	audio := rtmptest.MP3(t, 8, 16000, 1, "32k", true)
	var killedAt, backAt time.Time
	var oldPID int
	wsStream(t, p, "kill9", audio, func(i int) {
		switch {
		// 3 s in, once published in the session's eyes (its ffmpeg's
		// first progress report, which can come after nginx logged the
		// publish): an ffmpeg that dies before the stream ever went live
		// is an error for the client, not a restart.
		case killedAt.IsZero() && i >= 15:
			if info, _ := p.streamInfo(t, "kill9"); info.FFmpeg == "publishing" {
				oldPID = info.PID
				syscall.Kill(oldPID, syscall.SIGKILL)
				killedAt = time.Now()
			}
		case killedAt.IsZero():
		case backAt.IsZero():
			if info, _ := p.streamInfo(t, "kill9"); info.PID != oldPID && info.FFmpeg == "publishing" {
				backAt = time.Now()
			}
		}
	})
	if killedAt.IsZero() {
		t.Fatal("the stream was not published while it lasted")
	}
	// On a loaded machine the new ffmpeg may publish only after the
	// client has sent its last piece: then nginx's log tells.
	for deadline := time.Now().Add(10 * time.Second); backAt.IsZero() && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if rtmp.PublishCount("kill9") >= 2 {
			backAt = time.Now()
		}
	}
	if backAt.IsZero() {
		t.Fatal("no new ffmpeg publishing after kill -9")
	}
	took := backAt.Sub(killedAt)
	t.Logf("a new ffmpeg was publishing %s after kill -9 (within one 200 ms frame of the check)", took.Round(time.Millisecond))
	if took > 8*time.Second { // a bound on a loaded machine; the log line has the number
		t.Errorf("new ffmpeg publishing only after %s", took)
	}
	rec := rtmp.WaitRecorded(t, "kill9", 2)
	if sent := session.MP3Duration(audio).Seconds(); rec.Duration < sent-1.0 {
		t.Errorf("recorded %.3f s of %.3f s", rec.Duration, sent)
	}
	noZombies(t)
}

func TestClientPauseWithGapFill(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.GapFill = time.Second; c.IdleTimeout = 30 * time.Second })
	audio := rtmptest.MP3(t, 8.064, 16000, 1, "32k", true)
	chunks := splitEvery(audio, 14*144) // 16 chunks of 504 ms
	start := time.Now()
	p.postChunksEnd(t, "pause", chunks[:8], 504*time.Millisecond, false)
	time.Sleep(504*time.Millisecond + 3*time.Second) // the phone's network stalls
	p.postChunks(t, "pause", chunks[8:], 504*time.Millisecond)
	wall := time.Since(start).Seconds()
	rec := rtmp.WaitRecorded(t, "pause", 1)
	if n := rtmp.PublishCount("pause"); n != 1 {
		t.Errorf("%d publish sessions, want 1", n)
	}
	t.Logf("recorded %.3f s over %.3f s of wall clock (%.3f s of client audio)", rec.Duration, wall, session.MP3Duration(audio).Seconds())
	if rec.Duration < wall-1.5 || rec.Duration > wall+0.5 {
		t.Errorf("recorded %.3f s, want about the %.3f s of wall clock less at most the 1 s gap threshold", rec.Duration, wall)
	}
	if gap := rtmptest.MaxPTSGap(t, rtmp.Recordings("pause")[0]); gap > 0.1 {
		t.Errorf("a %.3f s hole in the recorded timestamps", gap)
	}
}

// startProcess runs the server as its own process (the test binary acting
// as main) and returns it with its base URL. Its log goes to the test log
// when verbose.
func startProcess(t *testing.T, args ...string) (*exec.Cmd, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return startProcessAt(t, addr, args...)
}

// serverLog keeps what a server process logged, to explain a failure.
type serverLog struct {
	mu    sync.Mutex
	lines []string
}

// about returns the lines that mention live ID id.
func (l *serverLog) about(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, " id="+id+" ") || strings.HasSuffix(line, " id="+id) {
			out = append(out, line)
		}
	}
	return out
}

// startProcessAt is startProcess on a given address.
func startProcessAt(t *testing.T, addr string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	return startProcessLogged(t, addr, nil, args...)
}

// startProcessLogged is startProcessAt keeping the server's log in logs.
func startProcessLogged(t *testing.T, addr string, logs *serverLog, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append(append([]string{"-listen", addr, "-key", "secret",
		"-rate-requests", "0", "-rate-sessions", "0"}, noAdmission...), args...)...)
	cmd.Env = append(os.Environ(), "FFMPEG_PUBLISHER_RUN_MAIN=1")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if logs != nil {
				logs.mu.Lock()
				logs.lines = append(logs.lines, sc.Text())
				logs.mu.Unlock()
			}
			if testing.Verbose() {
				fmt.Fprintln(os.Stderr, "server:", sc.Text())
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-logged
		cmd.Wait()
	})
	url := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			return cmd, url
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not come up")
		}
	}
}

func TestSIGTERMDeliversAcknowledgedAudio(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	cmd, url := startProcess(t, "-rtmp", rtmp.URL, "-gap-fill", "0")
	p := &publisher{URL: url, client: &http.Client{Timeout: 30 * time.Second}}
	audio := rtmptest.MP3(t, 10.08, 16000, 1, "32k", true)
	chunks := splitEvery(audio, 7*144) // 252 ms each
	const streams = 10
	acked := make([]time.Duration, streams)
	var wg sync.WaitGroup
	for s := 0; s < streams; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("term%d", s)
			paced(len(chunks), 252*time.Millisecond, func(i int) {
				resp, err := p.client.Post(url+"/base64?key=secret&id="+id, "text/plain",
					strings.NewReader(base64.StdEncoding.EncodeToString(chunks[i])))
				if err != nil {
					return // the server is gone
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					acked[s] += session.MP3Duration(chunks[i])
				}
			})
		}()
	}
	time.Sleep(3 * time.Second)
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("server exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
	wg.Wait()
	p.client.CloseIdleConnections()
	for s := 0; s < streams; s++ {
		id := fmt.Sprintf("term%d", s)
		rec := rtmp.WaitRecorded(t, id, 1)
		// One frame of slack: the AAC encoder's last, partial frame.
		if diff := rec.Duration - acked[s].Seconds(); diff < -0.07 || diff > 0.15 {
			t.Errorf("%s: recorded %.3f s, acknowledged %.3f s", id, rec.Duration, acked[s].Seconds())
		}
	}
}

func TestSIGKILLLeavesNoFFmpeg(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	cmd, url := startProcess(t, "-rtmp", rtmp.URL)
	p := &publisher{URL: url, client: &http.Client{Timeout: 30 * time.Second}}
	defer p.client.CloseIdleConnections()
	chunk := rtmptest.MP3(t, 0.504, 16000, 1, "32k", true)
	for i := 0; i < 3; i++ {
		if code, r := p.post(t, fmt.Sprintf("/base64?key=secret&id=k%d", i), strings.NewReader(base64.StdEncoding.EncodeToString(chunk))); code != 200 {
			t.Fatalf("stream %d: %d %+v", i, code, r)
		}
	}
	kids := childrenOf(cmd.Process.Pid)
	if len(kids) != 3 {
		t.Fatalf("%d ffmpeg children, want 3", len(kids))
	}
	cmd.Process.Kill()
	cmd.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		alive := 0
		for _, k := range kids {
			if syscall.Kill(k.pid, 0) == nil {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ffmpeg processes outlived the server's SIGKILL", alive)
		}
	}
}

// TestLoad runs many real-time streams at once (LOAD_STREAMS, default 100,
// for LOAD_SECONDS, default 30; `make test` uses fewer, `make load` the
// defaults): every stream delivers at least 99% of its audio, and
// goroutines, file descriptors and child processes return to their
// baseline.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	rtmptest.Require(t, "ffmpeg", "nginx")
	streams, seconds := envInt("LOAD_STREAMS", 100), envInt("LOAD_SECONDS", 30)
	rtmp := rtmptest.Start(t)
	fds, goroutines := countFDs(), runtime.NumGoroutine()
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.MaxSessions = streams })
	audio := rtmptest.MP3(t, float64(seconds), 16000, 1, "32k", true)
	var wg sync.WaitGroup
	start := time.Now()
	for s := 0; s < streams; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(s) * 10 * time.Millisecond) // arrivals spread over a second
			wsStream(t, p, fmt.Sprintf("load%d", s), audio, nil)
		}()
	}
	wg.Wait()
	t.Logf("%d streams of %d s took %s", streams, seconds, time.Since(start).Round(time.Millisecond))
	sent := session.MP3Duration(audio).Seconds()
	worst := 1.0
	for s := 0; s < streams; s++ {
		rec := rtmp.WaitRecorded(t, fmt.Sprintf("load%d", s), 1)
		worst = min(worst, rec.Duration/sent)
		if rec.Duration < 0.99*sent {
			t.Errorf("load%d: delivered %.1f%% of its audio", s, 100*rec.Duration/sent)
		}
	}
	t.Logf("worst stream delivered %.2f%% of its audio", 100*worst)
	p.cancel()
	if err := p.wait(); err != nil {
		t.Fatal(err)
	}
	p.client.CloseIdleConnections()
	for _, kid := range children(t) {
		if strings.HasSuffix(kid, " ffmpeg") {
			t.Errorf("ffmpeg left after the load: %s", kid)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		f, g := countFDs(), runtime.NumGoroutine()
		if f <= fds+2 && g <= goroutines+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after the load: %d fds (was %d), %d goroutines (was %d)", f, fds, g, goroutines)
			break
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func countFDs() int {
	entries, _ := os.ReadDir("/proc/self/fd")
	return len(entries)
}

// TestEndWhileTheNameIsHeld: a stream moved from another server, whose
// publish the RTMP server still holds, ends before that name is free. The
// session has acknowledged its audio and holds it; ending must publish it
// once the name is free, not drop it.
func TestEndWhileTheNameIsHeld(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, nil)
	const id = "held"
	audio := rtmptest.MP3(t, 2.016, 16000, 1, "32k", true) // made first: a loaded machine takes its time
	// The other publisher: 10 s of tone at real-time pace.
	holder := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "10",
		"-c:a", "aac", "-f", "flv", rtmp.URL+"/"+id)
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	held := make(chan error, 1)
	go func() { held <- holder.Wait() }()
	t.Cleanup(func() { holder.Process.Kill(); <-held })
	for deadline := time.Now().Add(10 * time.Second); rtmp.PublishCount(id) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the other publisher did not publish")
		}
	}
	// 2 s in four POSTs, the last one ending the stream, all while the
	// name is taken.
	pub.postChunks(t, id, splitEvery(audio, 14*144), 504*time.Millisecond)
	select {
	case err := <-held:
		held <- err // for the cleanup
		t.Fatal("the other publisher ended before the stream did: the test shows nothing")
	default:
	}
	pub.silence(t, id) // the session ended
	rec := rtmp.WaitRecorded(t, id, 2)
	if len(rec.Each) < 2 {
		t.Fatalf("recordings %+v: want the other publisher's, then ours", rec)
	}
	var ours float64
	for _, d := range rec.Each[1:] {
		ours += d
	}
	sent := session.MP3Duration(audio).Seconds()
	// Nothing acknowledged is lost; a flush split by a failed publish may
	// repeat up to the rewind (1.5 s) and a pre-roll.
	if ours < sent-0.07 || ours > sent+1.6 {
		t.Errorf("recorded %.3f s after the name was free, acknowledged %.3f s (recordings %v)", ours, sent, rec.Each)
		pub.explain(t, id)
	} else {
		t.Logf("recorded %.3f s of %.3f s acknowledged, after the other publisher's %.3f s (recordings %v)", ours, sent, rec.Each[0], rec.Each)
	}
}
