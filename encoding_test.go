package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"
)

// -aac-coder fast reaches the RTMP server as one AAC publish as long as
// what was sent; a coder ffmpeg does not offer is refused at start.
func TestAACCoderFast(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	if _, err := parseConfig([]string{"-rtmp", "rtmp://h/live", "-aac-coder", "anmr"}, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "-aac-coder") {
		t.Errorf("-aac-coder anmr: %v", err)
	}
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.AACCoder = "fast" })
	audio := rtmptest.MP3(t, 4.032, 16000, 1, "32k", true)
	p.postChunks(t, "fast", splitEvery(audio, 14*144), 504*time.Millisecond)
	checkArrived(t, rtmp, p, "fast", session.MP3Duration(audio))
}
