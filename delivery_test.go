package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/markers"
	"ffmpeg-publisher/internal/rtmptest"

	"github.com/gorilla/websocket"
)

// Acknowledged means delivered, checked on content: the audio carries a
// marker every 100 ms (internal/markers), ffmpeg is killed and the RTMP
// server restarted while it streams, and the recordings must hold every
// acknowledged marker, in order. Durations would prove nothing: gap fill
// makes a recording as long as the wall clock whatever was lost.

// The promise, per failure (an ffmpeg killed, the RTMP server restarted).
const (
	// lostPerFailure: a new ffmpeg is given pre-roll (audio before the
	// cut, which a fresh decoder turns into near-silence), so no audio
	// after the cut is lost; what is left is the measurement's own error
	// at a cut.
	lostPerFailure = 2 * markers.Noise
	// duplicatedPerKill: the pre-roll, and what the killed ffmpeg sent
	// after its last progress report: reports come at most every 0.5 s,
	// and a chunk that arrives whole is sent before the next one (up to
	// one 500 ms chunk more).
	duplicatedPerKill = 1200 * time.Millisecond
	// duplicatedPerRestart: after a failed connection the last 1.5 s
	// reported sent are sent again (the server's buffers are lost), on top
	// of a kill's.
	duplicatedPerRestart = 1500*time.Millisecond + duplicatedPerKill
)

const (
	deliverySeconds = 60 // of marked audio per stream
	ffmpegKills     = 5
	rtmpRestarts    = 1
	rtmpDownFor     = 2 * time.Second
)

// deliverySeed is DELIVERY_SEED, or a new one: the test logs it, and it
// reproduces the moments of the failures.
func deliverySeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("DELIVERY_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (DELIVERY_SEED=%d reproduces the failure moments)", seed, seed)
	return seed
}

// markedStream streams marked audio in pieces at real-time pace and
// counts what was acknowledged.
type markedStream struct {
	id     string
	pieces [][]byte
	every  time.Duration // audio per piece

	mu    sync.Mutex
	acked int  // pieces acknowledged, in order
	gap   bool // a piece was refused: acked stops counting there
}

// sent is how much audio has been acknowledged so far.
func (s *markedStream) sent() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Duration(s.acked) * s.every
}

func (s *markedStream) ack(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		s.gap = true
	}
	if !s.gap {
		s.acked++
	}
}

// ackedMarkers is how many markers the acknowledged pieces hold: all of
// them, or those that end a frame's worth of encoder delay before the
// first refused piece.
func (s *markedStream) ackedMarkers(total int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acked == len(s.pieces) {
		return total
	}
	return markers.Markers(time.Duration(s.acked)*s.every - 150*time.Millisecond)
}

// overPOSTs sends every piece as a /base64 POST, the last with end=1.
func (s *markedStream) overPOSTs(t *testing.T, p *publisher) {
	paced(len(s.pieces), s.every, func(i int) {
		q := "/base64?key=secret&id=" + s.id
		if i == len(s.pieces)-1 {
			q += "&end=1"
		}
		// A full buffer (ffmpeg restarting several times in a row on a
		// loaded machine) asks the client to retry, as the README says.
		// (This runs beside the test's goroutine: errors, not Fatal.)
		body := base64.StdEncoding.EncodeToString(s.pieces[i])
		for tries := 0; ; tries++ {
			resp, err := p.client.Post(p.URL+q, "text/plain", strings.NewReader(body))
			if err != nil {
				t.Errorf("piece %d: %v", i, err)
				s.ack(false)
				return
			}
			var r reply
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if resp.StatusCode == 503 && strings.Contains(r.Errmsg, "buffer is full") && tries < 20 {
				time.Sleep(500 * time.Millisecond)
				continue
			}
			if resp.StatusCode != 200 {
				t.Errorf("piece %d: %d %+v", i, resp.StatusCode, r)
			}
			s.ack(resp.StatusCode == 200)
			return
		}
	})
}

// overWebSocket sends every piece as a binary message on one connection
// (query adds to the URL), then closes with 1000.
func (s *markedStream) overWebSocket(t *testing.T, p *publisher, query string) {
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.URL, "http")+"/ws?key=secret&id="+s.id+query, nil)
	if err != nil {
		t.Errorf("dial: %v", err)
		return
	}
	defer c.Close()
	done := make(chan struct{})
	go drainStatus(c, func() { close(done) })
	paced(len(s.pieces), s.every, func(i int) {
		err := c.WriteMessage(websocket.BinaryMessage, s.pieces[i])
		if err != nil {
			t.Errorf("piece %d: %v", i, err)
		}
		s.ack(err == nil)
	})
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	<-done
}

// failure is one thing done to a stream, and how much audio had been
// acknowledged when it was done.
type failure struct {
	what string
	sent time.Duration
}

// chaos does things to a live stream.
type chaos struct {
	t      *testing.T
	p      *publisher
	rtmp   *rtmptest.Server
	id     string
	s      *markedStream
	killed int // the last PID killed
	done   []failure
}

// caughtUp: a stream with at most this much audio not yet confirmed sent
// has caught up after the last failure. A failure while an ffmpeg catches
// up on held audio may repeat all it sent since its last progress report,
// seconds of audio: the README states that case, and the bounds above are
// for a failure of a stream that is live.
const caughtUp = 1.0 // seconds: in audio, not bytes (WebM's markers run at 70 kbps)

// publishing waits until the stream's current ffmpeg (not one already
// killed) has published and caught up, and returns its PID, or 0 after a
// while.
func (c *chaos) publishing(wait time.Duration) int {
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if info, ok := c.p.streamInfo(c.t, c.id); ok && info.FFmpeg == "publishing" && info.PID > 0 && info.PID != c.killed && info.Held <= caughtUp {
			return info.PID
		}
	}
	return 0
}

// kill sends SIGKILL to the stream's ffmpeg once it publishes.
func (c *chaos) kill() {
	pid := c.publishing(15 * time.Second)
	if pid == 0 {
		c.t.Errorf("no ffmpeg publishing %s to kill (after %v)", c.id, c.done)
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	c.killed = pid
	c.done = append(c.done, failure{fmt.Sprintf("SIGKILL ffmpeg %d", pid), c.s.sent()})
}

// restartRTMP stops nginx-rtmp and starts it again on the same port.
func (c *chaos) restartRTMP() {
	if c.publishing(15*time.Second) == 0 {
		c.t.Errorf("%s not publishing before the RTMP server's restart (after %v)", c.id, c.done)
	}
	c.done = append(c.done, failure{"nginx-rtmp stopped", c.s.sent()})
	c.rtmp.Stop()
	time.Sleep(rtmpDownFor)
	c.rtmp.Restart(c.t)
}

// schedule picks when the failures happen: one in each equal slot of the
// stream after its first seconds, at a random moment of the slot's first
// part, so that each failure meets a stream that has published again.
func schedule(rng *rand.Rand, kills, restarts int, length time.Duration) (at []time.Duration, restartAt map[int]bool) {
	n := kills + restarts
	first, last := 3*time.Second, length-8*time.Second
	slot := (last - first) / time.Duration(n)
	for k := 0; k < n; k++ {
		at = append(at, first+time.Duration(k)*slot+time.Duration(rng.Int64N(int64(slot/2))))
	}
	restartAt = map[int]bool{}
	for _, k := range rng.Perm(n)[:restarts] {
		restartAt[k] = true
	}
	return at, restartAt
}

// checkMarkers analyzes the recordings of a stream against the markers
// acknowledged, logs what it found, and returns the report.
func checkMarkers(t *testing.T, rtmp *rtmptest.Server, id string, acked int, failures []failure) markers.Report {
	t.Helper()
	files := rtmp.Recordings(id)
	runs, err := markers.Recordings(files)
	if err != nil {
		t.Fatal(err)
	}
	rep := markers.Analyze(runs, acked)
	t.Logf("%s: %d recordings; markers %s", id, len(files), rep.Sequence)
	for _, f := range failures {
		t.Logf("%s: %s with %.3f s acknowledged", id, f.what, f.sent.Seconds())
	}
	for _, e := range rep.Events {
		t.Logf("%s: %s, near %s", id, e, nearest(failures, e.Source))
	}
	t.Logf("%s: lost %d ms, duplicated %d ms over %d failures; %d of %d acknowledged markers missing",
		id, rep.Lost.Milliseconds(), rep.Duplicated.Milliseconds(), len(failures), len(rep.Missing), acked)
	return rep
}

// duplicatedBound is what one failure, named as in failure.what, may
// publish twice.
func duplicatedBound(what string) time.Duration {
	if strings.HasPrefix(what, "nginx") {
		return duplicatedPerRestart
	}
	return duplicatedPerKill
}

// nearest names the failure done when the acknowledged audio was
// closest to source: the cut it made lies a little before that.
func nearest(failures []failure, source time.Duration) string {
	best := "the start"
	dist := source
	for _, f := range failures {
		if d := (f.sent - source).Abs(); d < dist {
			best, dist = f.what, d
		}
	}
	return best
}

// deliveryUnderFailures streams 60 s of marked MP3 (16 kHz mono, 32 kbps,
// as WeChat's recorder makes it) with send, kills its ffmpeg five times
// and restarts the RTMP server once, then checks the recordings' content.
func deliveryUnderFailures(t *testing.T, id string, every time.Duration, send func(*markedStream, *publisher)) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rng := rand.New(rand.NewPCG(deliverySeed(t), 0))
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.AdminKey = "admin" })
	const n = deliverySeconds * int(time.Second/markers.Unit)
	audio, err := markers.MP3(n, 16000, "32k")
	if err != nil {
		t.Fatal(err)
	}
	// 32 kbps: 4000 bytes a second, pieces cut wherever that falls in a frame.
	s := &markedStream{id: id, pieces: splitEvery(audio, int(4000*every/time.Second)), every: every}
	sending := make(chan struct{})
	go func() { defer close(sending); send(s, p) }()

	c := &chaos{t: t, p: p, rtmp: rtmp, id: id, s: s}
	if c.publishing(15*time.Second) == 0 {
		<-sending
		t.Fatalf("%s did not publish", id)
	}
	start := time.Now()
	at, restart := schedule(rng, ffmpegKills, rtmpRestarts, time.Duration(len(s.pieces))*every)
	for k, when := range at {
		time.Sleep(time.Until(start.Add(when)))
		if restart[k] {
			c.restartRTMP()
		} else {
			c.kill()
		}
	}
	<-sending
	rtmp.WaitRecorded(t, id, 1+len(c.done))
	rep := checkMarkers(t, rtmp, id, s.ackedMarkers(n), c.done)
	if len(rep.Missing) > 0 || len(rep.OutOfOrder) > 0 {
		t.Errorf("%s: acknowledged markers missing %v, out of order %v", id, rep.Missing, rep.OutOfOrder)
	}
	failures := time.Duration(len(c.done))
	var dupBound time.Duration
	for _, f := range c.done {
		dupBound += duplicatedBound(f.what)
	}
	if rep.Lost > failures*lostPerFailure || rep.Duplicated > dupBound {
		t.Errorf("%s: lost %d ms and duplicated %d ms over %d failures, want at most %d ms each and %d ms in all",
			id, rep.Lost.Milliseconds(), rep.Duplicated.Milliseconds(), failures, lostPerFailure.Milliseconds(), dupBound.Milliseconds())
	}
	for _, e := range rep.Events {
		// Which failure an event follows is a guess (the acknowledged
		// audio when it was done; a client held back by a full buffer
		// acknowledges nothing meanwhile), so one event gets the larger
		// bound; the total above keeps each failure's own.
		if (e.Lost && e.Len > lostPerFailure) || (!e.Lost && e.Len > duplicatedPerRestart) {
			t.Errorf("%s: %s: beyond the bound for one failure", id, e)
		}
	}
	if t.Failed() {
		p.explain(t, id)
	}
}

func TestDeliveryMP3OverPOSTs(t *testing.T) {
	deliveryUnderFailures(t, "marked-posts", 500*time.Millisecond, func(s *markedStream, p *publisher) { s.overPOSTs(t, p) })
}

func TestDeliveryMP3OverWebSocket(t *testing.T) {
	deliveryUnderFailures(t, "marked-ws", 100*time.Millisecond, func(s *markedStream, p *publisher) { s.overWebSocket(t, p, "") })
}

// TestDeliveryWebMAfterKill streams WebM/Opus as Chrome's MediaRecorder
// does (100 ms slices as binary messages) and kills its ffmpeg once: the
// stream publishes again, every acknowledged marker is in the recordings,
// and what is lost and published twice stays within a kill's bounds.
func TestDeliveryWebMAfterKill(t *testing.T) {
	webmAfterKill(t, "marked-webm", 100*time.Millisecond, func(s *markedStream, p *publisher) { s.overWebSocket(t, p, "&format=webm") })
}

// webmAfterKill streams 12 s of marked WebM/Opus in pieces of every with
// send, kills its ffmpeg once, and checks the recordings' content.
func webmAfterKill(t *testing.T, id string, every time.Duration, send func(*markedStream, *publisher)) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rng := rand.New(rand.NewPCG(deliverySeed(t), 0))
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.AdminKey = "admin" })
	const seconds = 12
	const n = seconds * int(time.Second/markers.Unit)
	audio, err := markers.WebMOpus(n, "32k")
	if err != nil {
		t.Fatal(err)
	}
	pieces := int(seconds * time.Second / every)
	s := &markedStream{id: id, pieces: splitEvery(audio, len(audio)/pieces+1), every: every}
	sending := make(chan struct{})
	go func() { defer close(sending); send(s, p) }()

	c := &chaos{t: t, p: p, rtmp: rtmp, id: id, s: s}
	if c.publishing(15*time.Second) == 0 {
		<-sending
		t.Fatalf("%s did not publish", id)
	}
	time.Sleep(2*time.Second + time.Duration(rng.Int64N(int64(4*time.Second))))
	c.kill()
	if len(c.done) == 0 {
		<-sending
		t.FailNow()
	}
	republished := false
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !republished; time.Sleep(50 * time.Millisecond) {
		republished = rtmp.PublishCount(id) >= 2
	}
	<-sending
	publishes := 2
	if !republished {
		t.Errorf("%s was not published again within 15 s of the kill", id)
		publishes = 1
	}
	rtmp.WaitRecorded(t, id, publishes)
	rep := checkMarkers(t, rtmp, id, s.ackedMarkers(n), c.done)
	after := markers.Markers(c.done[0].sent) + 1
	var before, since []int
	for _, m := range rep.Missing {
		if m >= after {
			since = append(since, m)
		} else {
			before = append(before, m)
		}
	}
	if len(since) > 0 || len(rep.OutOfOrder) > 0 {
		t.Errorf("%s: markers sent after the kill (from %d) missing: %v; out of order: %v", id, after, since, rep.OutOfOrder)
	}
	if len(before) > 0 {
		t.Errorf("%s: acknowledged markers sent before the kill missing: %v", id, before)
	}
	if rep.Lost > lostPerFailure || rep.Duplicated > duplicatedPerKill {
		t.Errorf("%s: lost %d ms and duplicated %d ms at a kill, want at most %d ms and %d ms",
			id, rep.Lost.Milliseconds(), rep.Duplicated.Milliseconds(), lostPerFailure.Milliseconds(), duplicatedPerKill.Milliseconds())
	}
	if t.Failed() {
		p.explain(t, id)
	}
}
