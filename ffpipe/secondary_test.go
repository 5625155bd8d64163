package ffpipe

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"

	"golang.org/x/sys/unix"
)

// hungServer takes TCP connections and never answers, as a crashed or
// overloaded ingest does.
func hungServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(conns)
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

// A restream whose server never answers, or an archive whose disk never
// takes a byte (a named pipe nobody reads), holds ffmpeg's exit for ever:
// the stop still ends cleanly, soon after the primary got everything, and
// the primary has the whole stream in one publish. About 5 s each.
func TestSecondariesDoNotHoldThePrimarysEnd(t *testing.T) {
	ffmpeg := rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")[0]
	audio := rtmptest.MP3(t, 3.024, 16000, 1, "32k", true)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, c *Config)
	}{
		{"hung restream", func(t *testing.T, c *Config) { c.Also = []string{"rtmp://" + hungServer(t) + "/live/end"} }},
		{"hung archive", func(t *testing.T, c *Config) {
			c.Record = filepath.Join(t.TempDir(), "end.m4a")
			if err := unix.Mkfifo(c.Record, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			primary := rtmptest.Start(t)
			cfg := Config{Binary: ffmpeg, Target: primary.URL + "/end"}
			tc.setup(t, &cfg)
			p, err := Start(t.Context(), cfg, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { p.Kill(); waitDone(t, p) }()
			if _, err := p.Write(audio); err != nil {
				t.Fatal(err)
			}
			<-p.Ready()
			if err := p.Stop(0); err != nil || p.Interrupted() {
				t.Errorf("stop: %v, interrupted %v; want a clean end for the primary", err, p.Interrupted())
			}
			rec := primary.WaitRecorded(t, "end", 1)
			if n := primary.PublishCount("end"); n != 1 || rec.Duration < 2.9 {
				t.Errorf("primary: %d publishes, %.3f s of 3.024 s", n, rec.Duration)
			}
		})
	}
}

// slowServer is a proxy to addr whose answers each take delay, as a
// distant ingest's do: the RTMP handshake and publish take several.
func slowServer(t *testing.T, addr string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(s, c); s.Close() }()
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := s.Read(buf)
					if err != nil {
						return
					}
					time.Sleep(delay)
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A new ffmpeg replays the audio held while its predecessor restarted
// faster than real time; a restream that is still connecting (a distant
// server: 200 ms an answer) queues all of it and drops none: 30 s at once
// arrive whole at both outputs. About 5 s.
func TestCatchUpFitsTheRestreamsQueue(t *testing.T) {
	t.Parallel()
	ffmpeg := rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")[0]
	primary, restream := rtmptest.Start(t), rtmptest.Start(t)
	audio := rtmptest.MP3(t, 30.024, 16000, 1, "32k", true)
	p, err := Start(t.Context(), Config{Binary: ffmpeg, Target: primary.URL + "/catch", Also: []string{"rtmp://" + slowServer(t, restream.Addr, 200*time.Millisecond) + "/live/catch"},
		CatchUp: 30 * time.Second}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { p.Kill(); waitDone(t, p) }()
	if _, err := p.Write(audio); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(0); err != nil {
		t.Fatal(err)
	}
	a, b := primary.WaitRecorded(t, "catch", 1), restream.WaitRecorded(t, "catch", 1)
	t.Logf("primary %.3f s, restream %.3f s of 30.024 s", a.Duration, b.Duration)
	if a.Duration < 29.9 || b.Duration < 29.9 || b.Files != 1 {
		t.Errorf("primary %+v, restream %+v: want 30 s at each, the restream in one publish", a, b)
	}
}

// The lines by which ffmpeg 5.1 reports a failure of the primary (a tee's
// slave #0) keep a stop from counting as clean; a restream's do not.
func TestPrimaryFailure(t *testing.T) {
	for line, want := range map[string]bool{
		"[tee @ 0x55ac7bba0400] [error] Slave muxer #0 failed, aborting.":                                 true,
		"[error] av_interleaved_write_frame(): Broken pipe":                                               true,
		"[tee @ 0x55ac7bba0400] [error] Slave muxer #1 failed: Broken pipe, continuing with 1/2 slaves.":  false,
		"[fifo @ 0x55e3cd656340] [error] Error opening rtmp://b/live/x: Connection refused":               false,
		"[tee @ 0x55ac7bba0400] [error] Slave muxer #10 failed: No space left on device, continuing with": false,
	} {
		if got := primaryFailure(line); got != want {
			t.Errorf("primaryFailure(%q) = %v", line, got)
		}
	}
}

// A restream whose server takes the connection and never answers fails
// after the I/O bound (restreamTimeout) instead of hanging in its
// handshake, and is retried. About 12 s.
func TestHungRestreamFailsAfterTheIOBound(t *testing.T) {
	t.Parallel()
	ffmpeg := rtmptest.Require(t, "ffmpeg", "nginx")[0]
	primary := rtmptest.Start(t)
	p, err := Start(t.Context(), Config{Binary: ffmpeg, Target: primary.URL + "/bound",
		Also: []string{"rtmp://" + hungServer(t) + "/live/bound"}}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	audio := rtmptest.MP3(t, 20, 16000, 1, "32k", true)
	stop, wrote := make(chan struct{}), make(chan struct{})
	defer func() { p.Kill(); close(stop); <-wrote; waitDone(t, p) }()
	go func() {
		defer close(wrote)
		// Real-time pace: 1 s of audio a second.
		for i := 0; i+4000 <= len(audio); i += 4000 {
			if _, err := p.Write(audio[i : i+4000]); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	start := time.Now()
	for deadline := start.Add(restreamTimeout + 8*time.Second); !p.Outputs()[1].Down; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the hung restream was not failed: %+v\n%s", p.Outputs(), strings.Join(p.Tail(), "\n"))
		}
	}
	t.Logf("failed after %s: %q", time.Since(start).Round(100*time.Millisecond), p.Outputs()[1].Err)
}
