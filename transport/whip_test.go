package transport

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/whipclient"
	"ffmpeg-publisher/session"
	"ffmpeg-publisher/whip"

	"github.com/pion/webrtc/v4"
)

// whipServer is the real handlers with WHIP on a loopback port and the
// fake ffmpeg.
func whipServer(t *testing.T, mods ...func(*Config, *session.Config)) *testServer {
	t.Helper()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, err := whip.NewHost(whip.Config{UDP: udp, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := newServer(t, "", func(c *Config, sc *session.Config) {
		c.WHIP = host
		for _, m := range mods {
			m(c, sc)
		}
	})
	t.Cleanup(host.Close) // after the server's shutdown (cleanups run last first)
	return ts
}

// offer is a real browser-like offer to send audio in codec alone.
func offer(t *testing.T, codec webrtc.RTPCodecCapability) string {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: codec, PayloadType: 0}, webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	track, _ := webrtc.NewTrackLocalStaticRTP(codec, "audio", "test")
	if _, err := pc.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return o.SDP
}

// postOffer posts sdp as a WHIP offer for id with the key k, and returns
// the answer with its body closed.
func postOffer(t *testing.T, ts *testServer, id, sdp string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", ts.URL+"/whip/"+id, strings.NewReader(sdp))
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

var (
	opusCodec = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
	pcmuCodec = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}
)

// Refusals come before anything starts, each with its status: the wrong
// key 403, a body that is not SDP 400, an offer without Opus 406, an offer
// not labelled application/sdp 415; PATCH (trickle) 405, OPTIONS answers
// the preflight, an unknown session 404.
func TestWHIPRefusals(t *testing.T) {
	ts := whipServer(t)
	good := offer(t, opusCodec)
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, c := range []struct {
		name, bearer, ctype, body string
		want                      int
	}{
		{"wrong key", "nope", "application/sdp", good, 403},
		{"no key", "", "application/sdp", good, 403},
		{"bad SDP", "k", "application/sdp", "hello", 400},
		{"no Opus", "k", "application/sdp", offer(t, pcmuCodec), 406},
		{"not SDP", "k", "text/plain", good, 415},
	} {
		req, _ := http.NewRequest("POST", ts.URL+"/whip/refused", strings.NewReader(c.body))
		req.Header.Set("Content-Type", c.ctype)
		if c.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+c.bearer)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
		}
	}
	if _, ok := ts.reg.Info("refused"); ok {
		t.Error("a refused offer started a stream")
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"OPTIONS", "/whip/x", 204},
		{"GET", "/whip/x", 405},
		{"PATCH", "/whip/x/0123", 405},
		{"DELETE", "/whip/x/0123", 404},
	} {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, nil)
		req.Header.Set("Origin", ts.URL)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
		if c.method == "OPTIONS" && (resp.Header.Get("Access-Control-Allow-Origin") != ts.URL || resp.Header.Get("Accept-Post") != "application/sdp") {
			t.Errorf("preflight headers %v", resp.Header)
		}
	}
}

// Without -webrtc-udp, /whip is not there.
func TestWHIPOff(t *testing.T) {
	ts := newServer(t, "", nil)
	code, _ := do(t, "POST", ts.URL+"/whip/x", strings.NewReader("v=0"))
	if code != 404 {
		t.Errorf("%d, want 404", code)
	}
}

// A WHIP publisher holds its ID: another is refused (409) while it is
// connected; DELETE on its Location ends the stream, and the ID is free.
func TestWHIPHoldsIDAndDeleteEnds(t *testing.T) {
	ts := whipServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := whipclient.Publish(ctx, ts.URL+"/whip/held", "k")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(ctx, [][]byte{{0xF8, 1, 2}, {0xF8, 1, 2}, {0xF8, 1, 2}}, whipclient.Impair{}); err != nil {
		t.Fatal(err)
	}
	for !live(ts, "held") {
		time.Sleep(20 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("no stream")
		}
	}
	_, err = whipclient.Publish(ctx, ts.URL+"/whip/held", "k")
	if re := (*whipclient.RefusedError)(nil); !errors.As(err, &re) || re.Status != 409 {
		t.Errorf("a second publisher: %v, want 409", err)
	}
	if code, err := c.Delete(ctx, ""); err != nil || code != 200 {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	for live(ts, "held") {
		time.Sleep(20 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("DELETE did not end the stream")
		}
	}
	if code, _ := c.Delete(ctx, ""); code != 404 {
		t.Errorf("a second DELETE: %d, want 404", code)
	}
}

func live(ts *testServer, id string) bool {
	info, ok := ts.reg.Info(id)
	return ok && info.State != session.StateEnded && info.State != session.StateEnding
}

// An offer with video besides Opus (OBS sends both) is answered: the
// audio is taken, the video declined.
func TestWHIPOfferWithVideo(t *testing.T) {
	ts := whipServer(t)
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, codec := range []webrtc.RTPCodecCapability{opusCodec, {MimeType: webrtc.MimeTypeH264, ClockRate: 90000}} {
		track, _ := webrtc.NewTrackLocalStaticRTP(codec, "av", "test")
		if _, err := pc.AddTrack(track); err != nil {
			t.Fatal(err)
		}
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answer, loc, err := whipclient.Offer(ctx, http.DefaultClient, ts.URL+"/whip/av", "k", o.SDP)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(answer, "m=video 0") && !strings.Contains(answer, "a=inactive") {
		t.Errorf("the video was not declined:\n%s", answer)
	}
	req, _ := http.NewRequest("DELETE", loc, nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

// An offer for a new stream past -max-sessions is refused with the 503 of
// its reply, not answered 201 and dropped at its first audio: the place is
// taken before the answer, and given back when the peer leaves silent.
func TestWHIPOfferPastCapacity(t *testing.T) {
	ts := whipServer(t, func(_ *Config, s *session.Config) { s.MaxSessions = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := whipclient.Publish(ctx, ts.URL+"/whip/first", "k")
	if err != nil {
		t.Fatal(err)
	}
	_, err = whipclient.Publish(ctx, ts.URL+"/whip/second", "k")
	if re := (*whipclient.RefusedError)(nil); !errors.As(err, &re) || re.Status != 503 {
		t.Errorf("an offer past capacity: %v, want 503", err)
	}
	if code, err := first.Delete(ctx, ""); err != nil || code != 200 {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	first.Close()
	for ts.reg.Len() > 0 {
		time.Sleep(20 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("the silent stream kept its place")
		}
	}
	second, err := whipclient.Publish(ctx, ts.URL+"/whip/second", "k")
	if err != nil {
		t.Fatalf("an offer once there was room: %v", err)
	}
	second.Close()
}

// A peer that keeps ICE up and sends no audio lets go of its ID after the
// read timeout, as a silent WebSocket does: the next offer is answered.
func TestWHIPSilentPeerLetsGo(t *testing.T) {
	ts := whipServer(t, func(c *Config, _ *session.Config) { c.WSReadTimeout = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	silent, err := whipclient.Publish(ctx, ts.URL+"/whip/quiet", "k")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for {
		next, err := whipclient.Publish(ctx, ts.URL+"/whip/quiet", "k")
		if err == nil {
			next.Close()
			return
		}
		if re := (*whipclient.RefusedError)(nil); !errors.As(err, &re) || re.Status != 409 || ctx.Err() != nil {
			t.Fatalf("the next offer: %v, want 409 and then an answer", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A WHIP session's URL ends its stream: it is never logged whole.
func TestWHIPSessionURLNotLogged(t *testing.T) {
	for path, want := range map[string]string{
		"/whip/room1/0123456789abcdef": "/whip/room1/…",
		"/whip/room1":                  "/whip/room1",
		"/live/room1":                  "/live/room1",
	} {
		if got := logPath(path); got != want {
			t.Errorf("%s is logged as %s, want %s", path, got, want)
		}
	}
}
