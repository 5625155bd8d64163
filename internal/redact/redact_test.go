package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ target, id, want string }{
		{"rtmp://h/live/room1", "room1", "rtmp://h/live/room1"},
		{"rtmp://h:1935/live/room1?secret=hunter2", "room1", "rtmp://h:1935/live/room1…"},
		{"rtmp://h/live/room1/KEY", "room1", "rtmp://h/live/room1…"},
		{"rtmp://h/live2/room1-KEY", "room1", "rtmp://h/live2/room1…"},
		{"rtmp://user:pass@h/live/room1", "room1", "rtmp://…@h/live/room1"},
		{"rtmp://u:p%40ss@h/live/room1/K?a=b", "room1", "rtmp://…@h/live/room1…"},
		{"rtmp://h/live/room1?a=1", "", "rtmp://h/live/room1…"},        // no ID: the last segment
		{"rtmp://h/live/other?a=1", "room1", "rtmp://h…"},              // ID absent: the path may be a key (a platform's URL)
		{"rtmp://h/room1/room1?k=v", "room1", "rtmp://h/room1/room1…"}, // the ID is the last match
		{"rtmp://h/live/{id}?secret=x", "{id}", "rtmp://h/live/{id}…"}, // a template, for the startup log
		{"rtmp://h/live/{id}", "{id}", "rtmp://h/live/{id}"},           // nothing to hide
		{"rtmp://h?x=1", "room1", "rtmp://h…"},                         // no path at all
		{"/tmp/out.flv", "out", "/tmp/out.flv"},                        // a file
		{"rtmp://u:p@cdn/live2/KEY?x=1", WholePath, "rtmp://…@cdn…"},   // an application's URL: no path
		{"rtmp://cdn", WholePath, "rtmp://cdn"},                        // nothing to hide
	} {
		if got := URL(tc.target, tc.id); got != tc.want {
			t.Errorf("URL(%q, %q) = %q, want %q", tc.target, tc.id, got, tc.want)
		}
	}
}

// TestLineHidesEveryFormFFmpegPrints feeds the lines Debian's ffmpeg 5.1
// prints at -loglevel level+debug for each kind of secret (the URL whole,
// the path, app and stream name, the publish command, a server's echo).
func TestLineHidesEveryFormFFmpegPrints(t *testing.T) {
	for _, tc := range []struct {
		target, id string
		secrets    []string
		lines      map[string]string // line → want
	}{
		{"rtmp://127.0.0.1:19403/live/room1?secret=hunter2", "room1", []string{"hunter2"}, map[string]string{
			"[debug] Reading option 'rtmp://127.0.0.1:19403/live/room1?secret=hunter2' ... matched as output url.":              "[debug] Reading option 'rtmp://127.0.0.1:19403/live/room1…' ... matched as output url.",
			"[rtmp @ 0x5560] [debug] Proto = rtmp, path = /live/room1?secret=hunter2, app = live, fname = room1?secret=hunter2": "[rtmp @ 0x5560] [debug] Proto = rtmp, path = /live/room1…, app = live, fname = room1…",
			"[rtmp @ 0x5560] [debug] Sending publish command for 'room1?secret=hunter2'":                                        "[rtmp @ 0x5560] [debug] Sending publish command for 'room1…'",
			"[info] Output #0, flv, to 'rtmp://127.0.0.1:19403/live/room1?secret=hunter2':":                                     "[info] Output #0, flv, to 'rtmp://127.0.0.1:19403/live/room1…':",
			"[error] Error writing trailer of rtmp://127.0.0.1:19403/live/room1?secret=hunter2: Broken pipe":                    "[error] Error writing trailer of rtmp://127.0.0.1:19403/live/room1…: Broken pipe",
			"[tcp @ 0x55d5] [error] Connection to tcp://127.0.0.1:19402?tcp_nodelay=1 failed: Connection refused":               "[tcp @ 0x55d5] [error] Connection to tcp://127.0.0.1:19402?tcp_nodelay=1 failed: Connection refused",
			"[rtmp @ 0x1] [error] Server error: stream secret=hunter2 refused":                                                  "[rtmp @ 0x1] [error] Server error: stream … refused",
			"[rtmp @ 0x1] [error] Server error: bad key hunter2":                                                                "[rtmp @ 0x1] [error] Server error: bad key …",
		}},
		{"rtmp://h/live/room1?secret=hunter%2Fx%20y", "room1", []string{"hunter%2Fx%20y", "hunter/x y", "hunter/x+y"}, map[string]string{
			"[error] rtmp://h/live/room1?secret=hunter%2Fx%20y: Input/output error": "[error] rtmp://h/live/room1…: Input/output error",
			"[error] Server error: secret=hunter/x y":                               "[error] Server error: …",
		}},
		{"rtmp://127.0.0.1:19403/live/room1/KEYSECRET", "room1", []string{"KEYSECRET"}, map[string]string{
			"[rtmp @ 0x55dd] [debug] Proto = rtmp, path = /live/room1/KEYSECRET, app = live/room1, fname = KEYSECRET": "[rtmp @ 0x55dd] [debug] Proto = rtmp, path = /live/room1…, app = live/room1, fname = …",
			"[error] rtmp://127.0.0.1:19403/live/room1/KEYSECRET: Input/output error":                                 "[error] rtmp://127.0.0.1:19403/live/room1…: Input/output error",
		}},
		{"rtmp://a.rtmp.youtube.com/live2/room1KEYSECRET", "room1", []string{"KEYSECRET"}, map[string]string{
			"[rtmp @ 0x1] [debug] Proto = rtmp, path = /live2/room1KEYSECRET, app = live2, fname = room1KEYSECRET": "[rtmp @ 0x1] [debug] Proto = rtmp, path = /live2/room1…, app = live2, fname = room1…",
			"[rtmp @ 0x1] [debug] Sending publish command for 'room1KEYSECRET'":                                    "[rtmp @ 0x1] [debug] Sending publish command for 'room1…'",
		}},
		{"rtmp://cdn.example/live2/abcdKEYSECRET", WholePath, []string{"abcdKEYSECRET"}, map[string]string{
			"[rtmp @ 0x1] [debug] Sending publish command for 'abcdKEYSECRET'":    "[rtmp @ 0x1] [debug] Sending publish command for '…'",
			"[info] Output #0, flv, to 'rtmp://cdn.example/live2/abcdKEYSECRET':": "[info] Output #0, flv, to 'rtmp://cdn.example…':",
			"[error] rtmp://cdn.example/live2/abcdKEYSECRET: Input/output error":  "[error] rtmp://cdn.example…: Input/output error",
		}},
		{"rtmp://user:pass%40word@127.0.0.1:19403/live/room1", "room1", []string{"pass%40word", "pass@word", "user:"}, map[string]string{
			"[info] Output #0, flv, to 'rtmp://user:pass%40word@127.0.0.1:19403/live/room1':": "[info] Output #0, flv, to 'rtmp://…@127.0.0.1:19403/live/room1':",
			"[debug] Proto = rtmp, path = /live/room1, app = live, fname = room1":             "[debug] Proto = rtmp, path = /live/room1, app = live, fname = room1",
			"[error] Server error: ?reason=needauth&user=user&salt=x":                         "[error] Server error: ?reason=needauth&user=…&salt=x",
			"user:pass@word": "…",
		}},
	} {
		r := New(tc.target, tc.id)
		for line, want := range tc.lines {
			got := r.Line(line)
			if got != want {
				t.Errorf("%s:\nline %q\n got %q\nwant %q", tc.target, line, got, want)
			}
			for _, s := range tc.secrets {
				if strings.Contains(got, s) {
					t.Errorf("%s: %q still holds %q", tc.target, got, s)
				}
			}
		}
	}
}

func TestShortPartsHiddenOnlyInContext(t *testing.T) {
	r := New("rtmp://h/live/room1?a=1", "room1")
	if got := r.Line("[info] size=1kB; fname = room1?a=1"); got != "[info] size=1kB; fname = room1…" {
		t.Errorf("got %q", got)
	}
}

func TestNothingToHide(t *testing.T) {
	r := New("rtmp://h/live/room1", "room1")
	if got := r.Line("[error] rtmp://h/live/room1: Connection refused"); got != "[error] rtmp://h/live/room1: Connection refused" {
		t.Errorf("got %q", got)
	}
	var zero *Target
	if zero.Line("x") != "x" || zero.URL() != "" {
		t.Error("nil Target changed its input")
	}
}

// A stream with several outputs hides every output's secrets, wherever
// ffmpeg names them: in its tee muxer's list, or one by one.
func TestAllHidesEveryTarget(t *testing.T) {
	targets := []string{
		"rtmps://live-api-s.facebook.com:443/rtmp/room1-FBKEY123?s_bl=1",
		"srt://ingest.example:9000?streamid=room1&passphrase=SRTPASS99",
		"rtmp://user:PW0RDX@h/live/room1",
	}
	r := All("room1", targets...)
	if got, want := r.URL(), "rtmps://live-api-s.facebook.com:443/rtmp/room1…"; got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
	line := "[info] Output #0, tee, to '[f=flv:onfail=ignore]" + targets[0] + "|[f=mpegts]" + targets[1] + "|" + targets[2] +
		"': [tee] Slave muxer #1 failed: srt://ingest.example:9000?streamid=room1&passphrase=SRTPASS99 passphrase=SRTPASS99 playpath room1-FBKEY123 pass PW0RDX"
	got := r.Line(line)
	for _, secret := range []string{"FBKEY123", "SRTPASS99", "PW0RDX", "s_bl"} {
		if strings.Contains(got, secret) {
			t.Errorf("Line leaves %q:\n%s", secret, got)
		}
	}
	for _, shown := range []string{"rtmps://live-api-s.facebook.com:443/rtmp/room1…", "srt://ingest.example:9000…", "rtmp://…@h/live/room1"} {
		if !strings.Contains(got, shown) {
			t.Errorf("Line lacks %q:\n%s", shown, got)
		}
	}
}
