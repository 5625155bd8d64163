package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
)

// adtsPayloads returns the raw frames of an ADTS stream, headers stripped:
// what FLV carries.
func adtsPayloads(t *testing.T, adts []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(adts) >= 7 {
		n := int(adts[3]&3)<<11 | int(adts[4])<<3 | int(adts[5])>>5
		hdr := 7
		if adts[1]&1 == 0 {
			hdr = 9
		}
		if n <= hdr || n > len(adts) {
			t.Fatalf("not an ADTS stream")
		}
		out = append(out, adts[hdr:n])
		adts = adts[n:]
	}
	return out
}

// checkAACArrived asserts what the RTMP server recorded for id, one
// publish session per input: AAC with each input's profile, rate and
// channels, every frame of it byte for byte in order (published without
// transcoding; gap fill may add silent frames between), and its duration
// within 3 % of what was sent plus the silence the server reported.
func checkAACArrived(t *testing.T, rtmp *rtmptest.Server, p *publisher, id string, inputs ...[]byte) {
	t.Helper()
	rec := rtmp.WaitRecorded(t, id, len(inputs))
	silence := p.silence(t, id)
	files := rtmp.Recordings(id)
	if n := rtmp.PublishCount(id); n != len(inputs) || len(files) != len(inputs) {
		t.Fatalf("%s: %d publish sessions, %d recordings; want %d", id, n, len(files), len(inputs))
	}
	var sent time.Duration
	for i, in := range inputs {
		sent += session.ADTSDuration(in)
		src := filepath.Join(t.TempDir(), "in.aac")
		os.WriteFile(src, in, 0o644)
		if want, got := rtmptest.ProbeAAC(t, src), rtmptest.ProbeAAC(t, files[i]); got != want {
			t.Errorf("%s: publish %d recorded as %+v; the input is %+v", id, i, got, want)
		}
		want, got := adtsPayloads(t, in), rtmptest.AACPayloads(t, files[i])
		j := 0
		for _, f := range got {
			if j < len(want) && bytes.Equal(f, want[j]) {
				j++
			}
		}
		if j != len(want) {
			t.Errorf("%s: publish %d holds %d of the %d frames sent, byte for byte, in order (%d frames in all)", id, i, j, len(want), len(got))
		}
	}
	w := (sent + silence).Seconds()
	if rec.Duration < w*0.97 || rec.Duration > w*1.03 {
		t.Errorf("%s: recorded %.3f s, sent %.3f s and %.2f s of silence", id, rec.Duration, sent.Seconds(), silence.Seconds())
	} else {
		t.Logf("%s: recorded %.3f s of %.3f s sent and %.2f s of silence (%s, %d Hz)", id, rec.Duration, sent.Seconds(), silence.Seconds(), rec.Codecs, rec.Rate)
	}
}

// piecesOf cuts an ADTS stream into n pieces of about equal size, wherever
// that falls (inside headers, across frames).
func piecesOf(adts []byte, n int) [][]byte { return splitEvery(adts, len(adts)/n+1) }

// aacWebSocket sends pieces over /ws?format=aac at one per every, calling
// at(i) before piece i, and closes with 1000.
func aacWebSocket(t *testing.T, p *publisher, id string, pieces [][]byte, every time.Duration, at func(i int)) {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.URL, "http")+"/ws?format=aac&key=secret&id="+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go drainStatus(c, func() { close(done) })
	paced(len(pieces), every, func(i int) {
		if at != nil {
			at(i)
		}
		if err := c.WriteMessage(websocket.BinaryMessage, pieces[i]); err != nil {
			t.Errorf("piece %d: %v", i, err)
		}
	})
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	<-done
}

// postAAC sends pieces as base64 POSTs with format=aac at one per every,
// the last with end=1 when end is set; query is added to each.
func postAAC(t *testing.T, p *publisher, id string, pieces [][]byte, every time.Duration, end bool, query func(i int) string) {
	paced(len(pieces), every, func(i int) {
		q := "/base64?format=aac&key=secret&id=" + id
		if query != nil {
			q += query(i)
		}
		if end && i == len(pieces)-1 {
			q += "&end=1"
		}
		code, r := p.postRetrying(t, q, base64.StdEncoding.EncodeToString(pieces[i]))
		if code != 200 || r.Errcode != 0 {
			t.Errorf("piece %d: %d %+v", i, code, r)
		}
	})
}

// postBinaryAAC sends pieces as raw POSTs to /chunk with Content-Type
// audio/aac, the last with end=1.
func postBinaryAAC(t *testing.T, p *publisher, id string, pieces [][]byte, every time.Duration) {
	paced(len(pieces), every, func(i int) {
		q := p.URL + "/chunk?key=secret&id=" + id
		if i == len(pieces)-1 {
			q += "&end=1"
		}
		for tries := 0; ; tries++ {
			resp, err := p.client.Post(q, "audio/aac", bytes.NewReader(pieces[i]))
			if err != nil {
				t.Fatal(err)
			}
			var r reply
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if resp.StatusCode == 503 && tries < 20 { // the buffer is full: retry, as the README asks
				time.Sleep(time.Second)
				continue
			}
			if resp.StatusCode != 200 || r.Errcode != 0 {
				t.Errorf("piece %d: %d %+v", i, resp.StatusCode, r)
			}
			return
		}
	})
}

// TestAACEndToEnd: AAC in ADTS over every transport, through the real
// ffmpeg to nginx-rtmp, published as it came.
func TestAACEndToEnd(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx", "curl")
	rtmp := rtmptest.Start(t)
	// Every stream here ends explicitly; a 3 s pause must not end one.
	pub := startPublisher(t, rtmp.URL, func(c *Config) { c.AdminKey = "admin"; c.IdleTimeout = 30 * time.Second })

	t.Run("numbered base64 posts cut at odd offsets, one retried, 16 kHz mono", func(t *testing.T) {
		t.Parallel()
		in := rtmptest.ADTS(t, 3, 16000, 1, "aac_low")
		pieces := piecesOf(in, 6)
		seq := func(i int) string { return "&seq=" + strconv.Itoa(i) }
		postAAC(t, pub, "aac-posts", pieces[:3], 500*time.Millisecond, false, seq)
		// The client lost the reply to chunk 2 and sends it again: it is written once.
		code, r := pub.post(t, "/base64?format=aac&key=secret&id=aac-posts&seq=2", strings.NewReader(base64.StdEncoding.EncodeToString(pieces[2])))
		if code != 200 || !strings.Contains(r.Errmsg, "ok") {
			t.Errorf("retry: %d %+v", code, r)
		}
		postAAC(t, pub, "aac-posts", pieces[3:], 500*time.Millisecond, true, func(i int) string { return seq(i + 3) })
		checkAACArrived(t, rtmp, pub, "aac-posts", in)
	})
	t.Run("websocket, 22.05 kHz stereo", func(t *testing.T) {
		t.Parallel()
		in := rtmptest.ADTS(t, 3, 22050, 2, "aac_low")
		aacWebSocket(t, pub, "aac-ws", piecesOf(in, 30), 100*time.Millisecond, nil)
		checkAACArrived(t, rtmp, pub, "aac-ws", in)
	})
	t.Run("upload from ffmpeg -f adts -method POST, 48 kHz stereo", func(t *testing.T) {
		t.Parallel()
		in := rtmptest.ADTS(t, 3, 48000, 2, "aac_low")
		file := filepath.Join(t.TempDir(), "in.aac")
		os.WriteFile(file, in, 0o644)
		out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", file,
			"-c", "copy", "-f", "adts", "-method", "POST", pub.URL+"/live/aac-upload?format=aac&key=secret").CombinedOutput()
		if err != nil {
			t.Fatalf("ffmpeg client: %v\n%s", err, out)
		}
		checkAACArrived(t, rtmp, pub, "aac-upload", in)
	})
	t.Run("upload from curl -T, 8 kHz mono", func(t *testing.T) {
		t.Parallel()
		in := rtmptest.ADTS(t, 2, 8000, 1, "aac_low")
		file := filepath.Join(t.TempDir(), "in.aac")
		os.WriteFile(file, in, 0o644)
		out, err := exec.Command("curl", "-sS", "-T", file, pub.URL+"/live/aac-curl?key=secret&format=aac").Output()
		if err != nil || !strings.Contains(string(out), `"errcode":0`) {
			t.Fatalf("curl: %v: %s", err, out)
		}
		checkAACArrived(t, rtmp, pub, "aac-curl", in)
	})
	t.Run("binary POSTs (audio/aac); the recorder restarted in another configuration", func(t *testing.T) {
		t.Parallel()
		first := rtmptest.ADTS(t, 2, 16000, 1, "aac_low")
		second := rtmptest.ADTS(t, 2, 44100, 2, "aac_main")
		pieces := append(piecesOf(first, 4), piecesOf(second, 4)...)
		postBinaryAAC(t, pub, "aac-reconfig", pieces, 500*time.Millisecond)
		checkAACArrived(t, rtmp, pub, "aac-reconfig", first, second)
	})
	t.Run("a 3 s pause is filled with silence", func(t *testing.T) {
		t.Parallel()
		in := rtmptest.ADTS(t, 4, 16000, 1, "aac_low")
		pieces := piecesOf(in, 8)
		start := time.Now()
		postAAC(t, pub, "aac-pause", pieces[:4], 500*time.Millisecond, false, nil)
		time.Sleep(500*time.Millisecond + 3*time.Second) // the phone's network stalls
		postAAC(t, pub, "aac-pause", pieces[4:], 500*time.Millisecond, true, nil)
		wall := time.Since(start).Seconds()
		checkAACArrived(t, rtmp, pub, "aac-pause", in)
		rec := rtmp.Measure("aac-pause")
		t.Logf("recorded %.3f s over %.3f s of wall clock", rec.Duration, wall)
		if rec.Duration < wall-1.5 || rec.Duration > wall+0.5 {
			t.Errorf("recorded %.3f s, want about the %.3f s of wall clock less at most the 1 s gap threshold", rec.Duration, wall)
		}
		if gap := rtmptest.MaxPTSGap(t, rtmp.Recordings("aac-pause")[0]); gap > 0.1 {
			t.Errorf("a %.3f s hole in the recorded timestamps", gap)
		}
	})
	t.Run("ffmpeg killed mid-stream", func(t *testing.T) {
		t.Parallel()
		in := rtmptest.ADTS(t, 4, 16000, 1, "aac_low")
		var oldPID int
		aacWebSocket(t, pub, "aac-kill", piecesOf(in, 20), 200*time.Millisecond, func(i int) {
			if oldPID == 0 && i >= 8 {
				if info, _ := pub.streamInfo(t, "aac-kill"); info.FFmpeg == "publishing" {
					oldPID = info.PID
					syscall.Kill(oldPID, syscall.SIGKILL)
				}
			}
		})
		if oldPID == 0 {
			t.Fatal("the stream was not published while it lasted")
		}
		rec := rtmp.WaitRecorded(t, "aac-kill", 2)
		if n := rtmp.PublishCount("aac-kill"); n != 2 {
			t.Errorf("%d publishes, want 2: the killed one and its successor", n)
		}
		files := rtmp.Recordings("aac-kill")
		var got [][]byte
		for _, f := range files {
			got = append(got, rtmptest.AACPayloads(t, f)...)
		}
		want := adtsPayloads(t, in)
		j := 0
		for _, f := range got {
			if j < len(want) && bytes.Equal(f, want[j]) {
				j++
			}
		}
		// The next ffmpeg starts where the killed one's reports ended:
		// every frame arrives, in order (some twice).
		if j != len(want) {
			t.Errorf("%d of %d frames arrived in order (%.3f s recorded)", j, len(want), rec.Duration)
		}
		t.Logf("%d of %d frames in order across %d publishes (%d frames, %.3f s, recorded: %v s)", j, len(want), len(files), len(got), rec.Duration, rec.Each)
	})
}
