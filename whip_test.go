package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/internal/whipclient"
)

// WHIP end to end: a pion publisher sends libopus packets as RTP in real
// time to the server's WebRTC port; the stream reaches nginx-rtmp as AAC.

// startWHIPPublisher is the server with WHIP on a loopback UDP port.
func startWHIPPublisher(t *testing.T, rtmpURL string) *publisher {
	t.Helper()
	return startPublisher(t, rtmpURL, func(c *Config) {
		c.WebRTCUDP = "127.0.0.1:0"
		c.AdminKey = "admin"
		c.IdleTimeout = 10 * time.Second
	})
}

// whipSend publishes pkts to id through imp, and waits until the stream
// has counted at least want of audio; it returns the client, still
// connected, and the packets imp dropped.
func whipSend(t *testing.T, p *publisher, id string, pkts [][]byte, imp whipclient.Impair, want time.Duration) (*whipclient.Client, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := whipclient.Publish(ctx, p.URL+"/whip/"+id, "secret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	dropped, err := c.Send(ctx, pkts, imp)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		info, _ := p.streamInfo(t, id)
		if info.Seconds >= want.Seconds() {
			break
		}
		if time.Now().After(deadline) {
			p.explain(t, id)
			t.Fatalf("the stream counted %.3f s, want %v: %+v", info.Seconds, want, info)
		}
	}
	return c, dropped
}

// checkWHIPRecording checks one AAC publish holding sent audio, and the
// silence the session fed, within 3 %.
func checkWHIPRecording(t *testing.T, rtmp *rtmptest.Server, p *publisher, id string, sent time.Duration) {
	t.Helper()
	rec := rtmp.WaitRecorded(t, id, 1)
	silence := p.silence(t, id)
	want := (sent + silence).Seconds()
	t.Logf("recorded %.3f s of %s in %d publish(es); sent %v, silence fed %v", rec.Duration, rec.Codecs, rtmp.PublishCount(id), sent, silence)
	if n := rtmp.PublishCount(id); n != 1 || rec.Codecs != "aac" {
		t.Errorf("%d publishes of %q, want one of AAC", n, rec.Codecs)
	}
	if rec.Duration < want*0.97 || rec.Duration > want*1.03 {
		t.Errorf("recorded %.3f s, want %.3f s within 3 %%", rec.Duration, want)
	}
	if t.Failed() {
		p.explain(t, id)
	}
}

// Ten seconds of Opus over WHIP: one publish, AAC, the length sent; the
// DELETE ends the stream.
func TestWHIPEndToEnd(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	p := startWHIPPublisher(t, rtmp.URL)
	pkts := rtmptest.OpusPackets(t, 10)
	sent := time.Duration(len(pkts)) * 20 * time.Millisecond
	const id = "whip-e2e"
	c, _ := whipSend(t, p, id, pkts, whipclient.Impair{}, sent)
	info, _ := p.streamInfo(t, id)
	if info.Format != "opus" || info.Transport != "whip" || info.WebRTC == nil || info.WebRTC.PacketsReceived != int64(len(pkts)) {
		t.Errorf("stream %+v, webrtc %+v: want opus from whip, every packet received", info, info.WebRTC)
	}
	if code, err := c.Delete(context.Background(), "secret"); err != nil || code != 200 {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	checkWHIPRecording(t, rtmp, p, id, sent)
}

// With 5 % of the packets lost and 5 % reordered, the timeline still follows
// the sender's clock (losses filled with silence): one publish, the length
// sent, and the loss counted in the stream list.
func TestWHIPLossAndReorder(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	p := startWHIPPublisher(t, rtmp.URL)
	pkts := rtmptest.OpusPackets(t, 10)
	sent := time.Duration(len(pkts)) * 20 * time.Millisecond
	const id = "whip-loss"
	seed := rand.Uint64()
	if v, err := strconv.ParseUint(os.Getenv("WHIP_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("reproduce with WHIP_SEED=%d", seed)
	imp := whipclient.Impair{Loss: 0.05, Reorder: 0.05, Rand: rand.New(rand.NewPCG(seed, 1))}
	// The tail may wait behind a hole until the peer closes: 5 packets.
	c, dropped := whipSend(t, p, id, pkts, imp, sent-200*time.Millisecond)
	// The figures once the last packet sent has been received.
	info, _ := p.streamInfo(t, id)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st := info.WebRTC; st != nil && st.PacketsReceived >= int64(len(pkts)-dropped) {
			break
		}
		info, _ = p.streamInfo(t, id)
	}
	st := info.WebRTC
	if st == nil || st.PacketsLost != int64(dropped) || st.PacketsReceived != int64(len(pkts)-dropped) || st.FilledSeconds < 0.02*float64(dropped)-0.1 {
		t.Errorf("webrtc stats %+v, want %d of %d packets lost and their 20 ms filled", st, dropped, len(pkts))
	}
	if dropped < 10 {
		t.Errorf("only %d packets dropped", dropped)
	}
	if code, err := c.Delete(context.Background(), "secret"); err != nil || code != 200 {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	checkWHIPRecording(t, rtmp, p, id, sent)
}

// A publisher whose peer goes silent (a browser that lost its network: to
// the server it is still connected, and keeps ICE up here) and comes back
// with a new offer for the same ID takes it over once the old peer has
// been quiet for a second, not after the 60 s read timeout: the old
// session is let go, and one publish holds both parts and the silence
// between them.
func TestWHIPReconnectContinues(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	p := startWHIPPublisher(t, rtmp.URL)
	pkts := rtmptest.OpusPackets(t, 3)
	part := time.Duration(len(pkts)) * 20 * time.Millisecond
	const id = "whip-reconnect"
	first, _ := whipSend(t, p, id, pkts, whipclient.Impair{}, part)
	defer first.Close() // connected and silent until the end
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var second *whipclient.Client
	for { // 409 while the old peer has sent audio within the last second
		c, err := whipclient.Publish(ctx, p.URL+"/whip/"+id, "secret")
		var re *whipclient.RefusedError
		if errors.As(err, &re) && re.Status == 409 && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("a new offer while the old peer still holds the ID: %v", err)
		}
		second = c
		break
	}
	defer second.Close()
	for code := 0; code != http.StatusNotFound; code, _ = first.Delete(ctx, "secret") {
		if ctx.Err() != nil {
			t.Fatalf("the replaced session's resource still answers DELETE with %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := second.Send(ctx, pkts, whipclient.Impair{}); err != nil {
		t.Fatal(err)
	}
	for info, _ := p.streamInfo(t, id); info.Seconds < (2 * part).Seconds(); info, _ = p.streamInfo(t, id) {
		if ctx.Err() != nil {
			t.Fatalf("the stream counted %.3f s, want %v", info.Seconds, 2*part)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, err := second.Delete(ctx, "secret"); err != nil || code != 200 {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	checkWHIPRecording(t, rtmp, p, id, 2*part)
}
