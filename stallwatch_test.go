package main

import (
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
)

// TestStallWatchIsQuiet streams 8 s to a healthy nginx-rtmp: the stall
// watch opens no connection of its own to the server (it reads the
// kernel's view of ffmpeg's), and never reports a stall.
func TestStallWatchIsQuiet(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	for deadline := time.Now().Add(10 * time.Second); rtmp.ConnectionCount() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nginx did not log Start's connection")
		}
	}
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.AdminKey = "admin" })
	audio := rtmptest.MP3(t, 8, 16000, 1, "32k", true)
	var checked, published int
	wsStream(t, p, "quiet", audio, func(i int) {
		info, ok := p.streamInfo(t, "quiet")
		if !ok {
			return
		}
		checked++
		if info.FFmpeg == "publishing" {
			published++
		}
		if info.Upstream != "" {
			t.Errorf("piece %d: upstream %q (%s) while nginx serves", i, info.Upstream, info.LastError)
		}
	})
	rtmp.WaitRecorded(t, "quiet", 1)
	publishes, conns := rtmp.PublishCount("quiet"), rtmp.ConnectionCount()-1 // not Start's
	t.Logf("%d connection(s) to nginx, %d publish(es); %d of %d looks while publishing", conns, publishes, published, checked)
	if published < 20 {
		t.Fatalf("published at only %d of %d looks: not enough of a stream to tell", published, checked)
	}
	if conns != publishes {
		t.Errorf("nginx accepted %d connections for %d publishes", conns, publishes)
	}
}
