package main

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
)

// waitLine waits until the server logged a line about id containing want,
// and returns it.
func (p *publisher) waitLine(t *testing.T, id, want string) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		p.ended.mu.Lock()
		for _, l := range p.ended.lines[id] {
			if strings.Contains(l, want) {
				p.ended.mu.Unlock()
				return l
			}
		}
		p.ended.mu.Unlock()
		if time.Now().After(deadline) {
			p.explain(t, id)
			t.Fatalf("%s: the server never logged %q", id, want)
		}
	}
}

var pidField = regexp.MustCompile(`pid=(\d+)`)

// prestarted waits until id's ffmpeg was started and returns its pid.
func (p *publisher) prestarted(t *testing.T, id string) int {
	t.Helper()
	m := pidField.FindStringSubmatch(p.waitLine(t, id, "session started"))
	if m == nil {
		t.Fatalf("%s: no pid in the start's log line", id)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// waitGone waits until process pid has been reaped.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the prestarted ffmpeg %d is still there", pid)
		}
	}
}

// TestPrestartWithoutAudio: a WebSocket that connects and sends nothing
// gets its ffmpeg at once; when no audio comes within the bound that
// ffmpeg is stopped and reaped, and it never connected to the RTMP server,
// let alone published; a connection that leaves before its first audio
// ends its stream at once. About 3 s.
func TestPrestartWithoutAudio(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, func(c *Config) { c.PrestartWait = time.Second })
	const id = "prestart-silent"
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(pub.URL, "http")+"/ws?id="+id+"&key=secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go drainStatus(c, nil)
	pid := pub.prestarted(t, id)
	pub.waitLine(t, id, "the ffmpeg started for it is stopped")
	waitGone(t, pid)
	// A connection that leaves before its first audio takes its
	// prestarted stream along at once, not after the idle timeout.
	const gone = "prestart-gone"
	c2, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(pub.URL, "http")+"/ws?id="+gone+"&key=secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	pid2 := pub.prestarted(t, gone)
	c2.Close()
	pub.waitLine(t, gone, "the connection left before its first audio")
	waitGone(t, pid2)
	if n := rtmp.PublishCount(id) + rtmp.PublishCount(gone); n != 0 {
		t.Errorf("%d publishes of a stream that sent no audio", n)
	}
	if n := rtmp.ConnectionCount() - 1; n != 0 { // 1: Start's own, to see nginx listening
		t.Errorf("%d RTMP connections from an ffmpeg that got no audio:\n%s", n, rtmp.ErrorLog())
	}
	// Stopping an ffmpeg that was given nothing is no error of ffmpeg's.
	pub.waitLine(t, id, "session ended")
	pub.waitLine(t, gone, "session ended")
	pub.ended.mu.Lock()
	defer pub.ended.mu.Unlock()
	for _, l := range append(pub.ended.lines[id], pub.ended.lines[gone]...) {
		if strings.Contains(l, "level=warning") || strings.Contains(l, "level=error") {
			t.Errorf("logged: %s", l)
		}
	}
}

// TestPrestartIsOnePublish: an ffmpeg started when the WebSocket or the
// streaming upload connected, before its first byte, publishes the stream
// once, all of it. About 5 s.
func TestPrestartIsOnePublish(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, nil)
	t.Run("upload", func(t *testing.T) {
		t.Parallel()
		const id = "prestart-upload"
		data := rtmptest.MP3(t, 3, 44100, 1, "64k", true)
		pr, pw := io.Pipe()
		req, err := http.NewRequest(http.MethodPost, pub.URL+"/live/"+id+"?key=secret", pr)
		if err != nil {
			t.Fatal(err)
		}
		status := make(chan int, 1)
		go func() {
			resp, err := pub.client.Do(req)
			if err != nil {
				pr.CloseWithError(err)
				status <- 0
				return
			}
			resp.Body.Close()
			status <- resp.StatusCode
		}()
		pub.prestarted(t, id) // before the body's first byte
		ps := splitEvery(data, 800)
		paced(len(ps), 100*time.Millisecond, func(i int) { pw.Write(ps[i]) })
		pw.Close()
		if code := <-status; code != http.StatusOK {
			t.Fatalf("upload: status %d", code)
		}
		checkArrived(t, rtmp, pub, id, session.MP3Duration(data))
	})
	for _, tc := range []struct{ id, query string }{{"prestart-mp3", ""}, {"prestart-pcm", "&format=pcm&rate=44100"}} {
		t.Run(tc.id, func(t *testing.T) {
			t.Parallel()
			var data []byte
			var every int
			var sent time.Duration
			if tc.query == "" {
				data, every = rtmptest.MP3(t, 3, 44100, 1, "64k", true), 800
				sent = session.MP3Duration(data)
			} else {
				data, every = makePCM(t, 3, 44100, 1), 8820
				sent = pcmDuration(data, 44100, 1)
			}
			c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(pub.URL, "http")+"/ws?id="+tc.id+"&key=secret"+tc.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var reading sync.WaitGroup
			reading.Add(1)
			go drainStatus(c, reading.Done)
			pub.prestarted(t, tc.id) // before the first byte
			ps := splitEvery(data, every)
			paced(len(ps), 100*time.Millisecond, func(i int) { c.WriteMessage(websocket.BinaryMessage, ps[i]) })
			c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			reading.Wait()
			if tc.query == "" {
				checkArrived(t, rtmp, pub, tc.id, sent)
			} else {
				checkPCMArrived(t, rtmp, pub, tc.id, sent, 44100)
			}
		})
	}
}
