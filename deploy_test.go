package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"

	"github.com/gorilla/websocket"
)

// The shipped deploy files keep streams whole: the systemd unit stops the
// server alone and long enough, a stop that signals every process of the
// unit at once still leaves one publish per stream, and so does a rolling
// restart behind HAProxy.

// unitSettings reads the [Service] settings of the shipped systemd unit,
// Environment= lines split into their variables.
func unitSettings(t *testing.T) (map[string]string, map[string]string) {
	t.Helper()
	f, err := os.Open("deploy/ffmpeg-publisher.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings, env := map[string]string{}, map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if k == "Environment" {
			ek, ev, _ := strings.Cut(v, "=")
			env[ek] = ev
			continue
		}
		settings[k] = v
	}
	return settings, env
}

func TestSystemdUnitStopsTheServerAloneAndLongEnough(t *testing.T) {
	unit, env := unitSettings(t)
	if unit["KillMode"] != "mixed" {
		t.Errorf("KillMode=%s: only mixed sends SIGTERM to the server alone (control-group and process end every ffmpeg mid-stream; none leaves none behind)", unit["KillMode"])
	}
	if unit["KillSignal"] != "SIGTERM" {
		t.Errorf("KillSignal=%s, want SIGTERM (the graceful shutdown)", unit["KillSignal"])
	}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, os.Stderr)
	if err != nil {
		t.Fatalf("the unit's environment: %v", err)
	}
	stop, err := time.ParseDuration(unit["TimeoutStopSec"])
	if err != nil {
		t.Fatalf("TimeoutStopSec=%q: %v", unit["TimeoutStopSec"], err)
	}
	// A stop takes the drain delay, then up to the grace; a few seconds
	// more kill, reap and log.
	const margin = 5 * time.Second
	if need := cfg.DrainDelay + cfg.ShutdownGrace + margin; stop < need {
		t.Errorf("TimeoutStopSec=%s, below drain %s + grace %s + margin %s = %s: systemd would SIGKILL a shutdown in progress",
			stop, cfg.DrainDelay, cfg.ShutdownGrace, margin, need)
	}
	if cfg.DrainDelay == 0 {
		t.Error("the unit sets no drain delay: behind a load balancer streams would not move before they end")
	}
}

// Publish sessions as nginx-rtmp's log tells them: connection "*N" asked
// to publish name with args; a connection refused as "already publishing"
// did not publish.
var (
	publishLine = regexp.MustCompile(`\*(\d+) publish: name='([^']*)' args='([^']*)'`)
	refusedLine = regexp.MustCompile(`\*(\d+) live: already publishing`)
)

// acceptedPublishes counts the publishes the RTMP server accepted, by
// name and then by the publish URL's query (args).
func acceptedPublishes(rtmp *rtmptest.Server) map[string]map[string]int {
	log := rtmp.ErrorLog()
	refused := map[string]bool{}
	for _, m := range refusedLine.FindAllStringSubmatch(log, -1) {
		refused[m[1]] = true
	}
	out := map[string]map[string]int{}
	for _, m := range publishLine.FindAllStringSubmatch(log, -1) {
		if refused[m[1]] {
			continue
		}
		if out[m[2]] == nil {
			out[m[2]] = map[string]int{}
		}
		out[m[2]][m[3]]++
	}
	return out
}

// ffmpegChildren lists the ffmpeg processes started by pid.
func ffmpegChildren(pid int) []int {
	var out []int
	for _, c := range childrenOf(pid) {
		if c.comm == "ffmpeg" {
			out = append(out, c.pid)
		}
	}
	return out
}

// What KillMode=control-group does on stop: SIGTERM to the server and to
// every ffmpeg of it at the same moment. The ffmpegs exit mid-stream; the
// draining server must not publish them again, so each stream keeps one
// publish, and the server still exits cleanly.
func TestControlGroupSIGTERMLeavesOnePublishPerStream(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	logs := &serverLog{}
	cmd, url := startProcessLogged(t, freeAddr(t), logs, "-rtmp", rtmp.URL, "-admin-key", "admin", "-drain-delay", "3s", "-gap-fill", "0")
	p := &publisher{URL: url, client: &http.Client{Timeout: 30 * time.Second}}
	audio := rtmptest.MP3(t, 12.096, 16000, 1, "32k", true)
	ids := []string{"cg0", "cg1", "cg2", "cg3"}
	var wg sync.WaitGroup
	for n, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n%2 == 1 {
				wsUntilRefused(url, id, audio)
				return
			}
			chunks := splitEvery(audio, 7*144) // 252 ms each
			paced(len(chunks), 252*time.Millisecond, func(i int) {
				resp, err := p.client.Post(url+"/base64?key=secret&id="+id, "text/plain",
					strings.NewReader(base64.StdEncoding.EncodeToString(chunks[i])))
				if err == nil {
					resp.Body.Close()
				}
			})
		}()
	}
	// Every stream publishing, then the signals.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		live := 0
		for _, id := range ids {
			if info, ok := p.streamInfo(t, id); ok && info.FFmpeg == "publishing" {
				live++
			}
		}
		if live == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d streams published", live, len(ids))
		}
	}
	kids := ffmpegChildren(cmd.Process.Pid)
	if len(kids) != len(ids) {
		t.Fatalf("%d ffmpeg children, want %d", len(kids), len(ids))
	}
	for _, pid := range kids { // the ffmpegs first: the worst order for the server
		syscall.Kill(pid, syscall.SIGTERM)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("server exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not exit after SIGTERM")
	}
	wg.Wait()
	for _, id := range ids {
		rtmp.WaitRecorded(t, id, 1)
	}
	counts := acceptedPublishes(rtmp)
	for _, id := range ids {
		if n := counts[id][""]; n != 1 {
			t.Errorf("%s: %d publishes, want 1", id, n)
			for _, line := range logs.about(id) {
				t.Log("server: " + line)
			}
		}
	}
}

// wsUntilRefused streams audio over a WebSocket at real-time pace until
// the audio ends or the server closes the connection.
func wsUntilRefused(url, id string, audio []byte) {
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/ws?key=secret&id="+id, nil)
	if err != nil {
		return
	}
	defer c.Close()
	closed := make(chan struct{})
	go drainStatus(c, func() { close(closed) })
	pieces := splitEvery(audio, 800) // 200 ms at 32 kbps
	paced(len(pieces), 200*time.Millisecond, func(i int) {
		select {
		case <-closed:
		default:
			c.WriteMessage(websocket.BinaryMessage, pieces[i])
		}
	})
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	<-closed
}

// The README's rolling restart (SIGTERM to one instance at a time, as
// systemd does with KillMode=mixed) behind the shipped HAProxy config:
// no acknowledged audio is lost, and every instance publishes each stream
// it serves once. Each instance's
// publishes carry its own tag in the RTMP URL's query, which nginx-rtmp
// logs as args while the stream name stays the same.
func TestRollingRestartOnePublishPerStreamAndInstance(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	tag := func(n, gen int) string { return fmt.Sprintf("by=%d.%d", n, gen) }
	argsFor := func(n, gen int) []string {
		return append(append([]string(nil), c.instArgs...), "-rtmp", c.rtmp.URL+"/{id}?"+tag(n, gen))
	}
	restart := func(n, gen int) {
		c.procs[n].Process.Signal(syscall.SIGTERM)
		c.procs[n].Wait()
		c.procs[n], _ = startProcessLogged(t, c.addrs[n], c.logs[n], argsFor(n, gen)...)
	}
	// Tagged instances before the streams start; HAProxy sees them back up.
	for _, cmd := range c.procs {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	for n, cmd := range c.procs {
		cmd.Wait()
		c.procs[n], _ = startProcessLogged(t, c.addrs[n], c.logs[n], argsFor(n, 0)...)
	}
	time.Sleep(1500 * time.Millisecond)
	audio := rtmptest.MP3(t, 20.16, 16000, 1, "32k", true)
	const ids = 9
	acked := make([]time.Duration, ids)
	var wg sync.WaitGroup
	for i := 0; i < ids; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acked[i] = c.stream(fmt.Sprintf("rr%d", i), audio, nil)
		}()
	}
	time.Sleep(2 * time.Second)
	for n := range c.procs {
		restart(n, 1)
		time.Sleep(1500 * time.Millisecond) // rise 2 × 500 ms
	}
	wg.Wait()
	counts := acceptedPublishes(c.rtmp)
	for i := 0; i < ids; i++ {
		id := fmt.Sprintf("rr%d", i)
		rec := c.rtmp.WaitRecorded(t, id, 1)
		counts = acceptedPublishes(c.rtmp)
		t.Logf("%s: publishes by instance %v, recorded %.2f s, acknowledged %.2f s", id, counts[id], rec.Duration, acked[i].Seconds())
		if len(counts[id]) == 0 {
			t.Errorf("%s: never published", id)
		}
		for by, n := range counts[id] {
			if n != 1 {
				t.Errorf("%s: %d publishes from instance %s, want 1", id, n, by)
				c.explain(id)
			}
		}
		if rec.Duration < acked[i].Seconds()-0.1 {
			t.Errorf("%s: recorded %.2f s of %.2f s acknowledged", id, rec.Duration, acked[i].Seconds())
		}
	}
}

// Behind the shipped HAProxy config, DELETE /streams/ID reaches the
// instance that holds the stream, and removes its publisher there.
func TestDeleteThroughHAProxyRemovesThePublisher(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	audio := rtmptest.MP3(t, 1.008, 16000, 1, "32k", true)
	const ids = 6
	conns := make([]*websocket.Conn, ids)
	for i := range conns {
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(c.URL, "http")+fmt.Sprintf("/ws?key=secret&id=del%d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.BinaryMessage, audio)
		conns[i] = ws
	}
	on := map[int]bool{}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		live := 0
		for inst, list := range c.holders() {
			live += len(list)
			if len(list) > 0 {
				on[inst] = true
			}
		}
		if live == ids {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d streams started", live, ids)
		}
	}
	t.Logf("the streams are on %d instances", len(on))
	for i, ws := range conns {
		req, _ := http.NewRequest("DELETE", c.URL+fmt.Sprintf("/streams/del%d", i), nil)
		req.Header.Set("Authorization", "Bearer admin")
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("DELETE /streams/del%d through HAProxy: %d (the call reached another instance)", i, resp.StatusCode)
			continue
		}
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
					t.Errorf("del%d: %v, want close 1008", i, err)
				}
				break
			}
		}
	}
}
