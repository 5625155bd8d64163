package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"
)

// rtmps to a server whose certificate a private CA signed (-tls-ca): the
// stream arrives as AAC in one publish. Without the CA the certificate is
// refused, so the check is on. About 5 s.
func TestRTMPSOutput(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.StartTLS(t)
	audio := rtmptest.MP3(t, 4.032, 16000, 1, "32k", true)

	t.Run("unknown CA", func(t *testing.T) {
		t.Parallel()
		p := startPublisher(t, rtmp.TLSURL, nil)
		code, r := p.post(t, "/base64?key=secret&id=untrusted", strings.NewReader(base64.StdEncoding.EncodeToString(audio[:14*144])))
		if code != 502 || !strings.Contains(r.Errmsg, "rtmps://"+rtmp.TLSAddr+"/live/untrusted") {
			t.Errorf("a server with an unknown certificate: %d %+v, want 502 naming the target", code, r)
		}
		if n := rtmp.PublishCount("untrusted"); n != 0 {
			t.Errorf("%d publishes through an unverified certificate", n)
		}
	})
	t.Run("private CA", func(t *testing.T) {
		t.Parallel()
		p := startPublisher(t, rtmp.TLSURL, func(c *Config) { c.TLSCA = rtmp.CAFile })
		p.postChunks(t, "tls", splitEvery(audio, 14*144), 504*time.Millisecond)
		checkArrived(t, rtmp, p, "tls", session.MP3Duration(audio))
	})
}

// srt: an ffmpeg SRT listener records what the server publishes to it
// (MPEG-TS); the recording is AAC and holds what was sent. About 5 s.
func TestSRTOutput(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe")
	srt := startSRTListener(t)
	p := startPublisher(t, srt.url+"?streamid={id}", nil)
	audio := rtmptest.MP3(t, 4.032, 16000, 1, "32k", true)
	p.postChunks(t, "srt1", splitEvery(audio, 14*144), 504*time.Millisecond)
	silence := p.silence(t, "srt1")
	if err := srt.wait(t); err != nil {
		t.Fatalf("the SRT listener: %v\n%s", err, srt.log())
	}
	codec, rate, dur := rtmptest.Probe(t, srt.file)
	want := (session.MP3Duration(audio) + silence).Seconds()
	t.Logf("recorded %s %d Hz %.3f s of %.3f s sent", codec, rate, dur, want)
	if codec != "aac" || dur < want*0.95 || dur > want*1.05 {
		t.Errorf("recorded %s, %.3f s; sent %.3f s", codec, dur, want)
	}
}

// Two outputs: the stream arrives at both nginx-rtmp instances; the
// restream's server is stopped for 5 s mid-stream: the primary keeps its
// one publish with no hole, /streams shows the restream down, then
// publishing again once its server is back, and never its key. About 14 s.
func TestRestreamOutputDown(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	primary, restream := rtmptest.Start(t), rtmptest.Start(t)
	p := startPublisher(t, "", func(c *Config) {
		c.AdminKey = "admin"
		c.Outputs = outputList{primary.URL + "/{id}", restream.URL + "/{id}?key=RESTREAMKEY"}
	})
	audio := rtmptest.MP3(t, 14, 16000, 1, "32k", true)
	var stoppedAt, downAt, backAt, againAt time.Time
	var stopIn <-chan time.Time
	var leaked string
	// nginx is stopped and started beside the paced writer, one after the other.
	stopped, restarted := make(chan struct{}), make(chan struct{})
	wsStream(t, p, "two", audio, func(i int) {
		info, _ := p.streamInfo(t, "two")
		outs := info.Outputs.List()
		if strings.Contains(string(info.Outputs), "RESTREAMKEY") {
			leaked = string(info.Outputs)
		}
		switch {
		case stoppedAt.IsZero() && stopIn == nil && len(outs) == 2 && outs[1].State == session.OutputPublishing:
			stopIn = time.After(2 * time.Second) // 2 s of audio at both first
		case stoppedAt.IsZero() && stopIn != nil:
			select {
			case <-stopIn:
				go func() { restream.Stop(); close(stopped) }()
				stoppedAt = time.Now()
			default:
			}
		case downAt.IsZero() && len(outs) == 2 && outs[1].State == session.OutputDown:
			downAt = time.Now()
			if info.FFmpeg != "publishing" || outs[0].State != session.OutputPublishing {
				t.Errorf("with the restream down: ffmpeg %s, primary %s", info.FFmpeg, outs[0].State)
			}
		case !downAt.IsZero() && backAt.IsZero() && time.Since(stoppedAt) >= 5*time.Second:
			backAt = time.Now()
			go func() {
				defer close(restarted)
				<-stopped
				restream.Restart(t)
			}()
		case !backAt.IsZero() && againAt.IsZero() && len(outs) == 2 && outs[1].State == session.OutputPublishing:
			againAt = time.Now()
			if outs[1].Recoveries != 1 {
				t.Errorf("restream recovered %d times, want 1", outs[1].Recoveries)
			}
		}
	})
	if !backAt.IsZero() {
		<-restarted
	}
	if leaked != "" {
		t.Errorf("/streams shows the restream's key: %s", leaked)
	}
	// The failure is logged once, the return once, and ffmpeg's words on
	// each retry (every 2 s) stay out of the warnings.
	count := func(text string) (n int) {
		p.ended.mu.Lock()
		defer p.ended.mu.Unlock()
		for _, line := range p.ended.lines["two"] {
			if strings.Contains(line, text) {
				n++
			}
		}
		return n
	}
	if f, r, w := count("output failed"), count("output publishes again"), count(`level=warning msg="ffmpeg error"`); f != 1 || r != 1 || w != 0 {
		t.Errorf("logged %d failures, %d returns, %d ffmpeg errors; want one failure, one return, no ffmpeg error", f, r, w)
	}
	if downAt.IsZero() || againAt.IsZero() {
		t.Fatalf("restream stopped at %v: seen down at %v, back at %v, publishing again at %v", stoppedAt, downAt, backAt, againAt)
	}
	t.Logf("restream seen down %s after its server stopped; publishing again %s after it was back", downAt.Sub(stoppedAt).Round(time.Millisecond), againAt.Sub(backAt).Round(time.Millisecond))

	rec := primary.WaitRecorded(t, "two", 1)
	silence := p.silence(t, "two")
	sent := (session.MP3Duration(audio) + silence).Seconds()
	if n := primary.PublishCount("two"); n != 1 || rec.Files != 1 {
		t.Errorf("primary: %d publishes, %d files, want 1", n, rec.Files)
	}
	if rec.Duration < sent*0.95 || rec.Duration > sent*1.05 {
		t.Errorf("primary recorded %.3f s of %.3f s", rec.Duration, sent)
	}
	if gap := rtmptest.MaxPTSGap(t, primary.Recordings("two")[0]); gap > 0.1 {
		t.Errorf("primary: a %.3f s hole while the restream was down", gap)
	}
	again := restream.WaitRecorded(t, "two", 2)
	if again.Files != 2 || again.Each[1] < 1 {
		t.Errorf("restream: %+v, want a second publish with audio after its return", again)
	}
	t.Logf("primary: %.3f s in one publish of %.3f s sent; restream: %v s in %d publishes", rec.Duration, sent, again.Each, again.Files)
}

// Platform-ready: 16 kHz mono in, -audio-rate 48000 -video black out: the
// recording has AAC at 48 kHz and H.264 with a keyframe at least every
// 2 s, and every video frame is within 100 ms of the audio's clock, from
// the start to the end (less the last, unfinished frame), across a 3 s
// client pause that gap fill bridges. 12 s of audio
// (the issue asks 60 s; the tracks share the audio's clock by
// construction, so a longer run adds time, not coverage). About 17 s.
func TestPlatformReadyAudioAndVideo(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) {
		c.AudioRate, c.Video, c.GapFill, c.IdleTimeout = 48000, "black", time.Second, 30*time.Second
	})
	audio := rtmptest.MP3(t, 12.096, 16000, 1, "32k", true)
	chunks := splitEvery(audio, 14*144) // 504 ms each
	p.postChunksEnd(t, "av", chunks[:12], 504*time.Millisecond, false)
	time.Sleep(504*time.Millisecond + 3*time.Second)
	p.postChunks(t, "av", chunks[12:], 504*time.Millisecond)
	rtmp.WaitRecorded(t, "av", 1)
	silence := p.silence(t, "av")
	files := rtmp.Recordings("av")
	if len(files) != 1 {
		t.Fatalf("%d recordings, want one publish", len(files))
	}
	codec, rate, _ := rtmptest.Probe(t, files[0])
	if codec != "aac" || rate != 48000 {
		t.Errorf("audio %s at %d Hz, want aac at 48000", codec, rate)
	}
	a, v := packets(t, files[0], "a"), packets(t, files[0], "v")
	if v.codec != "h264" || len(v.pts) < 10 {
		t.Fatalf("video: %s, %d packets", v.codec, len(v.pts))
	}
	lastKey := v.pts[0]
	if !v.key[0] {
		t.Error("the video does not start with a keyframe")
	}
	for i, pts := range v.pts {
		if v.key[i] {
			if pts-lastKey > 2.001 {
				t.Errorf("keyframes %.3f s apart at %.3f s", pts-lastKey, pts)
			}
			lastKey = pts
		}
	}
	aEnd, vEnd := a.end(), v.end()
	t.Logf("audio %.3f–%.3f s, video %.3f–%.3f s (%d frames); %.2f s of silence filled", a.pts[0], aEnd, v.pts[0], vEnd, len(v.pts), silence.Seconds())
	if d := a.pts[0] - v.pts[0]; d > 0.1 || d < -0.1 {
		t.Errorf("the tracks start %.3f s apart", d)
	}
	// Every frame sits where the audio's clock puts it: no drift.
	for i, pts := range v.pts {
		if d := pts - v.pts[0] - 0.2*float64(i); d > 0.1 || d < -0.1 {
			t.Errorf("video frame %d at %.3f s, %.3f s off the audio's clock", i, pts, d)
			break
		}
	}
	// The tracks end within one video frame (0.2 s) of each other: the last
	// frame may start inside the last audio frame, depending on when ffmpeg
	// read the end of its input.
	if d := aEnd - vEnd; d > 0.2+0.1 || d < -(0.2+0.1) {
		t.Errorf("the tracks end %.3f s apart", d)
	}
	if g := a.maxGap(); g > 0.1 {
		t.Errorf("a %.3f s hole in the audio", g)
	}
	if g := v.maxGap(); g > 0.2+0.1 {
		t.Errorf("a %.3f s hole in the video (a frame every 0.2 s)", g)
	}
	if sent := (session.MP3Duration(audio) + silence).Seconds(); aEnd-a.pts[0] < sent*0.95 {
		t.Errorf("recorded %.3f s of audio, sent %.3f s with gap fill", aEnd-a.pts[0], sent)
	}
}

// track is one stream's packets in a recording.
type track struct {
	codec string
	pts   []float64
	dur   []float64
	key   []bool
}

func (tr track) end() float64 {
	n := len(tr.pts) - 1
	return tr.pts[n] + tr.dur[n]
}

func (tr track) maxGap() float64 {
	g := 0.0
	for i := 1; i < len(tr.pts); i++ {
		g = max(g, tr.pts[i]-tr.pts[i-1])
	}
	return g
}

// packets lists the packets of a file's first stream of kind ("a", "v").
func packets(t *testing.T, file, kind string) track {
	t.Helper()
	var tr track
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", kind+":0", "-show_entries", "stream=codec_name",
		"-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	tr.codec = strings.TrimSpace(string(out))
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", kind+":0",
		"-show_entries", "packet=pts_time,duration_time,flags", "-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	for _, line := range strings.Fields(string(out)) {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		pts, err1 := strconv.ParseFloat(f[0], 64)
		dur, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		tr.pts, tr.dur, tr.key = append(tr.pts, pts), append(tr.dur, dur), append(tr.key, strings.HasPrefix(f[2], "K"))
	}
	if len(tr.pts) == 0 {
		t.Fatalf("no %s packets in %s", kind, file)
	}
	return tr
}

// srtListener is an ffmpeg taking one SRT publish and copying it to a file.
type srtListener struct {
	url, file, logFile string
	cmd                *exec.Cmd
	exited             chan error
}

func startSRTListener(t *testing.T) *srtListener {
	t.Helper()
	dir := t.TempDir()
	port := freeUDPPort(t)
	l := &srtListener{url: fmt.Sprintf("srt://127.0.0.1:%d", port), file: filepath.Join(dir, "rec.ts"),
		logFile: filepath.Join(dir, "ffmpeg.log"), exited: make(chan error, 1)}
	logf, err := os.Create(l.logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	l.cmd = exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info",
		"-f", "mpegts", "-i", l.url+"?mode=listener", "-c", "copy", "-f", "mpegts", l.file)
	l.cmd.Stdout, l.cmd.Stderr = logf, logf
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { l.exited <- l.cmd.Wait() }()
	t.Cleanup(func() {
		l.cmd.Process.Kill()
		<-l.exited
	})
	for deadline := time.Now().Add(10 * time.Second); !udpBound(port); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the SRT listener did not bind port %d:\n%s", port, l.log())
		}
	}
	return l
}

// wait returns once the listener ffmpeg ended (its caller closed).
func (l *srtListener) wait(t *testing.T) error {
	select {
	case err := <-l.exited:
		l.exited <- err
		return err
	case <-time.After(20 * time.Second):
		return fmt.Errorf("still running")
	}
}

func (l *srtListener) log() string {
	b, _ := os.ReadFile(l.logFile)
	return string(b)
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// udpBound tells whether a UDP socket is bound to port on this host.
func udpBound(port int) bool {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasSuffix(f[1], want) {
			return true
		}
	}
	return false
}

func TestOutputFlag(t *testing.T) {
	none := func(string) string { return "" }
	c, err := parseConfig([]string{"-output", "rtmp://a/live/{id}", "-output", "srt://b:9000?streamid={id}"}, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Outputs.route()("x", "x"); !reflect.DeepEqual(got, []string{"rtmp://a/live/x", "srt://b:9000?streamid=x"}) {
		t.Errorf("outputs for x: %q", got)
	}
	c, err = parseConfig(nil, func(k string) string {
		if k == "PUBLISHER_OUTPUT" {
			return "rtmp://a/live rtmps://b/app/{id}?k=1"
		}
		return ""
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Outputs.route()("y", "y"); !reflect.DeepEqual(got, []string{"rtmp://a/live/y", "rtmps://b/app/y?k=1"}) {
		t.Errorf("outputs from the environment: %q", got)
	}
	if c, _ := parseConfig(nil, none, io.Discard); c.Outputs.route() != nil {
		t.Error("without -output, -rtmp decides")
	}
	// Only network outputs: the server never writes where an -output
	// could point it on its own disk; the error never quotes a key.
	for _, bad := range [][]string{
		{"-output", "file:///var/lib/SECRETKEY/{id}"},
		{"-output", "rtmp://a/live/{id}", "-output", "/tmp/SECRETKEY.flv"},
		{"-output", "http://a/SECRETKEY/{id}"},
		{"-output", "rtmp:///live/SECRETKEY"},
		{"-rtmp", "pipe:SECRETKEY"},
	} {
		_, err := parseConfig(bad, none, io.Discard)
		if err == nil || strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), "rtmp://, rtmps:// or srt://") && !strings.Contains(err.Error(), "without a host") {
			t.Errorf("%q: %v, want a startup error naming the schemes and no key", bad, err)
		}
	}
}

// hungIngest takes TCP connections and never answers, as a crashed or
// overloaded ingest does.
func hungIngest(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 64)
	go func() {
		defer close(conns)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// A restream whose server takes the connection and never answers does not
// touch the primary: the stream ends in one publish there, with nothing
// dropped. (ffmpeg itself never exits: its tee waits for the restream.)
// About 6 s.
func TestHungRestreamLeavesThePrimaryWhole(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	primary := rtmptest.Start(t)
	p := startPublisher(t, "", func(c *Config) {
		c.AdminKey = "admin"
		c.Outputs = outputList{primary.URL + "/{id}", "rtmp://" + hungIngest(t) + "/live/{id}"}
	})
	audio := rtmptest.MP3(t, 3.024, 16000, 1, "32k", true)
	// Meanwhile /streams never shows the restream publishing: ffmpeg has
	// not complained yet, but its server took nothing.
	seen := map[string]bool{}
	stop, looked := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(looked)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if info, ok := p.streamInfo(t, "hung"); ok {
				if outs := info.Outputs.List(); len(outs) == 2 && info.FFmpeg == "publishing" {
					seen[outs[1].State] = true
				}
			}
		}
	}()
	p.postChunks(t, "hung", splitEvery(audio, 14*144), 504*time.Millisecond)
	close(stop)
	<-looked
	if !seen[session.OutputConnecting] || seen[session.OutputPublishing] {
		t.Errorf("the hung restream was shown %v, want connecting and never publishing", seen)
	}
	checkArrived(t, primary, p, "hung", session.MP3Duration(audio))
	p.ended.mu.Lock()
	defer p.ended.mu.Unlock()
	for _, line := range p.ended.lines["hung"] {
		if strings.Contains(line, "dropped") || strings.Contains(line, "ffmpeg started; it sends") {
			t.Errorf("the hung restream cost the primary: %s", line)
		}
	}
}

// A restream whose server stops reading (SIGSTOP) while connected is
// shown stalled within the stall timeout, counted, and publishing again
// once its server reads; the primary goes on in one publish. About 12 s.
func TestRestreamStalled(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	primary, restream := rtmptest.Start(t), rtmptest.Start(t)
	p := startPublisher(t, "", func(c *Config) {
		c.AdminKey, c.StallTimeout = "admin", 2*time.Second
		c.Outputs = outputList{primary.URL + "/{id}", restream.URL + "/{id}"}
	})
	audio := rtmptest.MP3(t, 10, 16000, 1, "32k", true)
	var frozen, stalled, back bool
	wsStream(t, p, "stall", audio, func(i int) {
		info, _ := p.streamInfo(t, "stall")
		outs := info.Outputs.List()
		if len(outs) != 2 {
			return
		}
		switch {
		case !frozen && outs[1].State == session.OutputPublishing:
			frozen = restream.Signal(syscall.SIGSTOP) == nil
		case frozen && !stalled && outs[1].State == session.OutputStalled:
			stalled = true
			if outs[0].State != session.OutputPublishing || outs[1].Error == "" {
				t.Errorf("with the restream stalled: %+v", outs)
			}
			restream.Signal(syscall.SIGCONT)
		case stalled && !back && outs[1].State == session.OutputPublishing:
			back = true
		}
	})
	restream.Signal(syscall.SIGCONT)
	if !stalled || !back {
		t.Fatalf("frozen %v, seen stalled %v, publishing again %v", frozen, stalled, back)
	}
	var stalls float64
	for _, m := range p.scrape(t)["publisher_output_stalls_total"].GetMetric() {
		stalls += m.GetCounter().GetValue()
	}
	if stalls != 1 {
		t.Errorf("publisher_output_stalls_total = %v, want 1", stalls)
	}
	if n := primary.PublishCount("stall"); n != 1 {
		t.Errorf("primary: %d publishes", n)
	}
}
