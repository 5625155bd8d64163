package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"
)

// wechatExample is the sample mini-program; its Node tests are in node/.
const wechatExample = "examples/wechat-miniprogram"

// TestWeChatMiniProgram runs the sample mini-program's streaming module
// (utils/streamer.js) in Node with a wx shim against the real server and
// nginx-rtmp: node/live.e2e.mjs checks the client's side (everything
// recorded was sent, reconnects, recorder restarts, the queue drained), and
// this test what the RTMP server got: one publish per stream, the
// duration within 5 %.
func TestWeChatMiniProgram(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx", "node")
	rtmp := rtmptest.Start(t)
	// The deployed idle timeout: the background case pauses for 5 s.
	pub := startPublisher(t, rtmp.URL, func(c *Config) { c.IdleTimeout = session.DefaultIdleTimeout })

	// 16 kHz mono at 48 kbps: the streamer's default recorder settings.
	mp3 := rtmptest.MP3(t, 10.008, 16000, 1, "48k", true)
	file := filepath.Join(t.TempDir(), "mic.mp3")
	if err := os.WriteFile(file, mp3, 0o644); err != nil {
		t.Fatal(err)
	}
	sent := session.MP3Duration(mp3)
	// The recorder's PCM frames: 16 kHz mono s16le.
	pcm := makePCM(t, 10, 16000, 1)
	pcmFile := filepath.Join(t.TempDir(), "mic.pcm")
	if err := os.WriteFile(pcmFile, pcm, 0o644); err != nil {
		t.Fatal(err)
	}
	pcmSent := time.Duration(len(pcm)/2) * time.Second / 16000

	for _, tc := range []struct {
		name, id string
		pcm      bool
	}{
		{"websocket", "wx-ws", false},
		{"post", "wx-post", false},
		{"socket dropped", "wx-drop", false},
		{"recorder restart", "wx-restart", false},
		{"background", "wx-background", false},
		{"pcm websocket", "wx-pcm-ws", true},
		{"pcm post", "wx-pcm-post", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command("node", "--test", "--test-name-pattern", "^"+regexp.QuoteMeta(tc.name)+"$", "node/live.e2e.mjs")
			cmd.Dir = wechatExample
			cmd.Env = append(os.Environ(),
				"PUBLISHER_URL="+pub.URL, "PUBLISHER_KEY=secret", "WECHAT_ID="+tc.id,
				"WECHAT_MP3="+file, fmt.Sprintf("WECHAT_MP3_SECONDS=%.6f", sent.Seconds()),
				"WECHAT_PCM="+pcmFile, fmt.Sprintf("WECHAT_PCM_SECONDS=%.6f", pcmSent.Seconds()))
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if err != nil || !regexp.MustCompile(`(?m)^# pass 1$`).Match(out) {
				pub.explain(t, tc.id)
				t.Fatalf("node test %q: %v\n%s", tc.name, err, out)
			}
			t.Logf("node test %q passed in %s", tc.name, time.Since(start).Round(time.Millisecond))
			if tc.pcm {
				checkArrived(t, rtmp, pub, tc.id, pcmSent)
			} else {
				checkArrived(t, rtmp, pub, tc.id, sent)
			}
		})
	}
}
