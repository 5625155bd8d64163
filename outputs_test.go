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
				go restream.Stop()
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
			go restream.Restart(t)
		case !backAt.IsZero() && againAt.IsZero() && len(outs) == 2 && outs[1].State == session.OutputPublishing:
			againAt = time.Now()
			if outs[1].Recoveries != 1 {
				t.Errorf("restream recovered %d times, want 1", outs[1].Recoveries)
			}
		}
	})
	if leaked != "" {
		t.Errorf("/streams shows the restream's key: %s", leaked)
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
	if got := c.Outputs.route()("x"); !reflect.DeepEqual(got, []string{"rtmp://a/live/x", "srt://b:9000?streamid=x"}) {
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
	if got := c.Outputs.route()("y"); !reflect.DeepEqual(got, []string{"rtmp://a/live/y", "rtmps://b/app/y?k=1"}) {
		t.Errorf("outputs from the environment: %q", got)
	}
	if c, _ := parseConfig(nil, none, io.Discard); c.Outputs.route() != nil {
		t.Error("without -output, -rtmp decides")
	}
}
