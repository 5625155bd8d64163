package main

import (
	"testing"

	"ffmpeg-publisher/internal/rtmptest"
)

// The demo page's WebRTC (WHIP) mode in Debian's Chromium, headless, with a
// fake microphone: the browser's own Opus for about 5 s reaches the RTMP
// server as one AAC publish as long as what the page captured once
// connected (WebRTC sends nothing before that, whatever the microphone hears).
func TestBrowserWHIP(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx", "chromium")
	rtmp := rtmptest.Start(t)
	pub := startWHIPPublisher(t, rtmp.URL)
	ctx := browser(t)
	const id = "browser-whip"
	got := recordInBrowser(t, ctx, pub.URL+"/demo/?key=secret&id="+id+"&format=whip", 5, nil)
	rec := rtmp.WaitRecorded(t, id, 1)
	silence := pub.silence(t, id)
	t.Logf("the page captured %.2f s, the RTMP server recorded %.2f s (%s, %d Hz), silence fed %v", got, rec.Duration, rec.Codecs, rec.Rate, silence)
	if n := rtmp.PublishCount(id); n != 1 || rec.Codecs != "aac" {
		t.Errorf("%d publishes, codecs %q; want one AAC publish", n, rec.Codecs)
	}
	if rec.Duration < 4.5 || rec.Duration < got*0.9 || rec.Duration > got*1.1 {
		t.Errorf("recorded %.2f s, want what the page captured (%.2f s, at least 5) ± 10%%", rec.Duration, got)
	}
	if t.Failed() {
		pub.explain(t, id)
	}
}
