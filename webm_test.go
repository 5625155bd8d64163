package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
)

// WebM/Opus on par with MP3, end to end with real ffmpeg and nginx-rtmp.

// opusTone is seconds of a tone as WebM/Opus at 48 kHz mono, as ffmpeg
// writes it to a pipe (sizes unknown, as a MediaRecorder's).
func opusTone(t *testing.T, seconds float64) []byte {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d="+strconv.FormatFloat(seconds, 'f', -1, 64),
		"-ac", "1", "-c:a", "libopus", "-b:a", "32k", "-f", "webm", "pipe:1").Output()
	if err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	return out
}

// ptsSteps returns the smallest and largest step between consecutive audio
// packets' timestamps in a recording: a hole shows in the largest, an
// overlap or a step back in the smallest.
func ptsSteps(t *testing.T, file string) (minStep, maxStep float64) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "packet=pts_time", "-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	prev, minStep := -1.0, 1e9
	for _, line := range strings.Fields(string(out)) {
		p, err := strconv.ParseFloat(strings.TrimRight(line, ","), 64)
		if err != nil {
			continue
		}
		if prev >= 0 {
			minStep, maxStep = min(minStep, p-prev), max(maxStep, p-prev)
		}
		prev = p
	}
	return minStep, maxStep
}

// A WebM client that pauses 3 s (its network stalls; its recorder's clock
// runs on) leaves one publish whose timestamps run on without a hole or an
// overlap: the pause is filled with silent Opus, and the seconds counted
// are the WebM's own.
func TestWebMClientPauseWithGapFill(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) {
		c.GapFill = time.Second
		c.IdleTimeout = 30 * time.Second
		c.AdminKey = "admin"
	})
	audio := opusTone(t, 6)
	file := filepath.Join(t.TempDir(), "sent.webm")
	if err := os.WriteFile(file, audio, 0o644); err != nil {
		t.Fatal(err)
	}
	// The session counts the Opus packets; ffprobe leaves out the
	// encoder's delay and the last packet's padding: less than a packet
	// apart (ffprobe's timebase is the millisecond).
	counted := session.WebMDuration(audio)
	if _, _, probed := rtmptest.Probe(t, file); (counted - time.Duration(probed*float64(time.Second))).Abs() > 21*time.Millisecond {
		t.Errorf("the WebM holds %.3f s by ffprobe, the session counts %v: more than a 20 ms packet apart", probed, counted)
	}

	const id = "webm-pause"
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.URL, "http")+"/ws?key=secret&format=webm&id="+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go drainStatus(c, func() { close(done) })
	pieces := splitEvery(audio, len(audio)/60+1) // 60 pieces of 100 ms
	send := func(pieces [][]byte) {
		paced(len(pieces), 100*time.Millisecond, func(i int) {
			if err := c.WriteMessage(websocket.BinaryMessage, pieces[i]); err != nil {
				t.Errorf("piece %d: %v", i, err)
			}
		})
	}
	start := time.Now()
	send(pieces[:30])
	time.Sleep(100*time.Millisecond + 3*time.Second) // the network stalls
	send(pieces[30:])
	wall := time.Since(start).Seconds()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, ok := p.streamInfo(t, id)
		if ok && info.Bytes == int64(len(audio)) {
			if info.Seconds != counted.Seconds() || info.Silence < 1.5 {
				t.Errorf("%.3f s counted and %.2f s of silence fed, want the %v sent and the pause less the gap", info.Seconds, info.Silence, counted)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream took %+v, not the %d bytes sent", info, len(audio))
		}
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	<-done

	rec := rtmp.WaitRecorded(t, id, 1)
	silence := p.silence(t, id)
	if n := rtmp.PublishCount(id); n != 1 {
		t.Errorf("%d publish sessions, want 1", n)
	}
	t.Logf("recorded %.3f s over %.3f s of wall clock (%v sent, %v of silence)", rec.Duration, wall, counted, silence)
	if want := (counted + silence).Seconds(); rec.Duration < want-0.1 || rec.Duration > want+0.1 {
		t.Errorf("recorded %.3f s, want the %.3f s of audio and silence fed", rec.Duration, want)
	}
	if rec.Duration < wall-1.5 || rec.Duration > wall+0.5 {
		t.Errorf("recorded %.3f s, want about the %.3f s of wall clock less at most the 1 s gap threshold", rec.Duration, wall)
	}
	if lo, hi := ptsSteps(t, rtmp.Recordings(id)[0]); lo <= 0 || hi > 0.1 {
		t.Errorf("timestamps step by %.3f to %.3f s: want neither a hole nor an overlap", lo, hi)
	}
	if t.Failed() {
		p.explain(t, id)
	}
}

// overSeqPOSTs sends every piece as a binary POST of contentType numbered
// with seq (the last with end=1), and every third one twice, as a client
// whose reply was lost does: written twice, a piece of WebM would break the
// stream for good.
func (s *markedStream) overSeqPOSTs(t *testing.T, p *publisher, contentType string) {
	paced(len(s.pieces), s.every, func(i int) {
		q := fmt.Sprintf("%s/base64?key=secret&id=%s&seq=%d", p.URL, s.id, i)
		if i == len(s.pieces)-1 {
			q += "&end=1"
		}
		ok := s.postPiece(t, p, q, contentType, s.pieces[i])
		if i%3 == 0 { // its reply was lost: the client sends it again
			ok = s.postPiece(t, p, q, contentType, s.pieces[i]) && ok
		}
		s.ack(ok)
	})
}

// postPiece posts one piece, retrying a full buffer as the README asks of
// clients. (It runs beside the test's goroutine: errors, not Fatal.)
func (s *markedStream) postPiece(t *testing.T, p *publisher, url, contentType string, piece []byte) bool {
	for tries := 0; ; tries++ {
		resp, err := p.client.Post(url, contentType, bytes.NewReader(piece))
		if err != nil {
			t.Errorf("%s: %v", url, err)
			return false
		}
		var r reply
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode == 503 && strings.Contains(r.Errmsg, "buffer is full") && tries < 20 {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %+v", url, resp.StatusCode, r)
		}
		return resp.StatusCode == 200
	}
}

// WebM in binary POSTs, numbered, some sent twice, its ffmpeg killed once:
// every acknowledged marker is published once a kill's bounds allow.
func TestDeliveryWebMOverSeqPOSTs(t *testing.T) {
	webmAfterKill(t, "marked-webm-posts", 500*time.Millisecond, func(s *markedStream, p *publisher) { s.overSeqPOSTs(t, p, "audio/webm") })
}
