package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"

	"github.com/gorilla/websocket"
)

// makePCM is a tone as s16le PCM, as a recorder's PCM frames give it.
func makePCM(t *testing.T, seconds float64, rate, channels int) []byte {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
		"-i", fmt.Sprintf("sine=f=440:d=%g:r=%d", seconds, rate),
		"-ac", fmt.Sprint(channels), "-f", "s16le", "pipe:1").Output()
	if err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	return out
}

func pcmDuration(data []byte, rate, channels int) time.Duration {
	return time.Duration(len(data)/(2*channels)) * time.Second / time.Duration(rate)
}

// aacSeconds is how long n samples last once AAC-encoded: the encoder's
// 1024 samples of priming first, then whole frames of 1024.
func aacSeconds(samples int64, rate int) float64 {
	frames := (samples + 1024 + 1023) / 1024
	return float64(frames*1024) / float64(rate)
}

// checkPCMArrived asserts one AAC publish at the PCM's sample rate holding
// what was sent (and any gap fill) within 3%.
func checkPCMArrived(t *testing.T, rtmp *rtmptest.Server, p *publisher, id string, sent time.Duration, rate int) {
	t.Helper()
	rec := rtmp.WaitRecorded(t, id, 1)
	silence := p.silence(t, id)
	want := aacSeconds(int64((sent+silence).Seconds()*float64(rate)+0.5), rate)
	if n := rtmp.PublishCount(id); n != 1 || rec.Files != 1 || rec.Codecs != "aac" || rec.Rate != rate ||
		rec.Duration < want*0.97 || rec.Duration > want*1.03 {
		p.explain(t, id)
		t.Errorf("%s: %d publishes, recordings %+v; want one AAC at %d Hz of %.3f s (%.2f s of it silence)",
			id, n, rec, rate, want, silence.Seconds())
		return
	}
	t.Logf("%s: recorded %.3f s of %.3f s sent and %.2f s of silence (%d Hz)", id, rec.Duration, sent.Seconds(), silence.Seconds(), rec.Rate)
}

// TestPCMEndToEnd sends PCM over every transport to real ffmpeg and
// nginx-rtmp, in pieces cut at odd byte offsets (an odd byte, half a stereo
// frame) at real-time pace: each arrives as one AAC publish at its rate.
// About 6 s.
func TestPCMEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, nil)
	const seconds = 5
	// pieces cuts data into about n pieces of an odd size: every cut
	// splits a sample.
	pieces := func(data []byte, n int) [][]byte {
		return splitEvery(data, len(data)/n|1)
	}

	t.Run("base64 posts, 16 kHz mono", func(t *testing.T) {
		t.Parallel()
		data := makePCM(t, seconds, 16000, 1)
		ps := pieces(data, 10*seconds)
		paced(len(ps), 100*time.Millisecond, func(i int) {
			q := "/base64?key=secret&id=pcm-b64&format=pcm&rate=16000&channels=1"
			if i == len(ps)-1 {
				q += "&end=1"
			}
			if code, r := pub.postRetrying(t, q, base64.StdEncoding.EncodeToString(ps[i])); code != 200 {
				t.Errorf("chunk %d: %d %+v", i, code, r)
			}
		})
		checkPCMArrived(t, rtmp, pub, "pcm-b64", pcmDuration(data, 16000, 1), 16000)
	})
	t.Run("binary chunks, 44.1 kHz stereo", func(t *testing.T) {
		t.Parallel()
		data := makePCM(t, seconds, 44100, 2)
		ps := pieces(data, 10*seconds)
		paced(len(ps), 100*time.Millisecond, func(i int) {
			q := pub.URL + "/chunk?key=secret&id=pcm-bin"
			if i == len(ps)-1 {
				q += "&end=1"
			}
			resp, err := pub.client.Post(q, "audio/L16;rate=44100;channels=2", bytes.NewReader(ps[i]))
			if err != nil {
				t.Error(err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("chunk %d: %d %s", i, resp.StatusCode, body)
			}
		})
		checkPCMArrived(t, rtmp, pub, "pcm-bin", pcmDuration(data, 44100, 2), 44100)
	})
	t.Run("upload from ffmpeg -f s16le -method POST, 8 kHz mono", func(t *testing.T) {
		t.Parallel()
		wav := t.TempDir() + "/talk.wav"
		if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
			"-i", fmt.Sprintf("sine=f=440:d=%d:r=44100", seconds), wav).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg: %v\n%s", err, out)
		}
		// The README's command.
		out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", wav,
			"-ar", "8000", "-ac", "1", "-f", "s16le", "-method", "POST",
			pub.URL+"/live/pcm-up?key=secret&format=pcm&rate=8000&channels=1").CombinedOutput()
		if err != nil {
			t.Fatalf("ffmpeg client: %v\n%s", err, out)
		}
		checkPCMArrived(t, rtmp, pub, "pcm-up", seconds*time.Second, 8000)
	})
	t.Run("websocket, 48 kHz stereo", func(t *testing.T) {
		t.Parallel()
		data := makePCM(t, seconds, 48000, 2)
		ps := pieces(data, 10*seconds)
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(pub.URL, "http")+"/ws?id=pcm-ws&key=secret&format=pcm&rate=48000&channels=2", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var reading sync.WaitGroup
		reading.Add(1)
		go drainStatus(c, reading.Done)
		paced(len(ps), 100*time.Millisecond, func(i int) { c.WriteMessage(websocket.BinaryMessage, ps[i]) })
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		reading.Wait()
		checkPCMArrived(t, rtmp, pub, "pcm-ws", pcmDuration(data, 48000, 2), 48000)
	})
}

// TestPCMWeChatClient is a mini-program recording PCM (16 kHz mono, 4 KB
// frames every 128 ms) and POSTing each frame as an ArrayBuffer, numbered,
// one at a time; after 10 s its recorder restarts (a new rec, seq from 0).
// The stream stays one publish holding every frame. About 13 s.
func TestPCMWeChatClient(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end, 13 s")
	}
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, nil)
	const frame = 4096 // frameSize: 4 (KB)
	every := time.Duration(frame/2) * time.Second / 16000
	data := makePCM(t, 12.5, 16000, 1)
	frames := splitEvery(data, frame)
	restart := int(10 * time.Second / every)
	post := func(rec string, seq, i int) {
		q := fmt.Sprintf("%s/chunk?key=secret&id=wechat&seq=%d&rec=%s", pub.URL, seq, rec)
		if i == len(frames)-1 {
			q += "&end=1"
		}
		for tries := 0; ; tries++ {
			resp, err := pub.client.Post(q, "audio/L16;rate=16000;channels=1", bytes.NewReader(frames[i]))
			if err != nil {
				t.Errorf("frame %d: %v", i, err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 503 && tries < 20 { // the buffer full on a loaded machine: retry, as the README asks
				time.Sleep(time.Second)
				continue
			}
			if resp.StatusCode != 200 {
				t.Errorf("frame %d: %d %s", i, resp.StatusCode, body)
			}
			return
		}
	}
	paced(restart, every, func(i int) { post("first", i, i) })
	time.Sleep(300 * time.Millisecond) // the recorder stops and starts again
	paced(len(frames)-restart, every, func(i int) { post("second", i, restart+i) })
	checkPCMArrived(t, rtmp, pub, "wechat", pcmDuration(data, 16000, 1), 16000)
}

// TestPCMGapFill: a WebSocket client that pauses 3 s gets PCM silence in
// the gap: one publish whose timestamps run on without a hole. About 8 s.
func TestPCMGapFill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end, 8 s")
	}
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, func(c *Config) { c.GapFill = time.Second; c.IdleTimeout = 30 * time.Second })
	data := makePCM(t, 4, 22050, 1)
	pieces := splitEvery(data, 4411) // 100 ms and a byte
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(pub.URL, "http")+"/ws?id=pcm-gap&key=secret&format=pcm&rate=22050", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reading sync.WaitGroup
	reading.Add(1)
	go drainStatus(c, reading.Done)
	half := len(pieces) / 2
	paced(half, 100*time.Millisecond, func(i int) { c.WriteMessage(websocket.BinaryMessage, pieces[i]) })
	time.Sleep(3 * time.Second)
	paced(len(pieces)-half, 100*time.Millisecond, func(i int) { c.WriteMessage(websocket.BinaryMessage, pieces[half+i]) })
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	reading.Wait()
	checkPCMArrived(t, rtmp, pub, "pcm-gap", pcmDuration(data, 22050, 1), 22050)
	if sil := pub.silence(t, "pcm-gap"); sil < 1500*time.Millisecond {
		t.Errorf("%s of silence filled a 3 s pause with a 1 s threshold", sil)
	}
	if files := rtmp.Recordings("pcm-gap"); len(files) == 1 {
		if gap := rtmptest.MaxPTSGap(t, files[0]); gap > 0.1 {
			t.Errorf("a %.3f s hole in the recorded timestamps", gap)
		}
	}
}
