package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
)

// The status page in Debian's Chromium, headless: it refuses a wrong admin
// key; with the right one a stream shows within 2 s of its first audio,
// with its transport and a growing audio count, and goes within 2 s of its
// end, whether the client or the page's End button ended it.

const statusKey = "status-admin-key"

// waitStatus polls js (a boolean expression) in the status page.
func waitStatus(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	waitJS(t, ctx, what, js, "document.body.innerText")
}

// shownWithin checks that the page's own clock saw event (statusSeen or
// statusGone) for id within limit of since.
func shownWithin(t *testing.T, ctx context.Context, event, id string, since time.Time, limit time.Duration) {
	t.Helper()
	at := pageEval[float64](t, ctx, fmt.Sprintf("window.%s[%q]", event, id))
	took := time.UnixMilli(int64(at)).Sub(since)
	t.Logf("%s: %s %s after the event", id, event, took.Round(time.Millisecond))
	if took > limit {
		t.Errorf("%s: %s %s after the event, want within %s", id, event, took.Round(time.Millisecond), limit)
	}
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	os.MkdirAll("test-artifacts", 0o755)
	if err := os.WriteFile(filepath.Join("test-artifacts", name), shot, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestStatusPage(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx", "chromium")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, func(c *Config) { c.AdminKey = statusKey })
	audio := rtmptest.MP3(t, 12, 16000, 1, "32k", true)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1200, 330), chromedp.Navigate(pub.URL+"/status"), chromedp.WaitVisible(chromedp.ID("adminkey"))); err != nil {
		t.Fatal(err)
	}
	signIn := func(key string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("adminkey"), key), chromedp.Click(chromedp.ID("signin"))); err != nil {
			t.Fatal(err)
		}
	}

	signIn("not-the-key")
	waitStatus(t, ctx, "the refusal", "document.getElementById('loginerror').textContent === 'wrong or missing admin key'")
	if pageEval[bool](t, ctx, "!document.getElementById('board').hidden || sessionStorage.length > 0") {
		t.Fatal("a wrong key shows the board or is kept")
	}

	signIn(statusKey)
	waitStatus(t, ctx, "a first poll", "Number(document.body.dataset.polls) > 0 && !document.getElementById('board').hidden")
	if strings.Contains(pageEval[string](t, ctx, "location.href"), statusKey) {
		t.Error("the key is in the page's URL")
	}
	if got := pageEval[string](t, ctx, "document.getElementById('admission').textContent"); got != "taking new streams" {
		t.Errorf("admission shown as %q", got)
	}

	// A WebSocket stream, ended by the page's End button.
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(pub.URL, "http")+"/ws?id=status-ws&key=secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				closed <- err
				return
			}
		}
	}()
	stop := make(chan struct{})
	var sending sync.WaitGroup
	sending.Add(1)
	wsStart := time.Now()
	go func() {
		defer sending.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for _, piece := range splitEvery(audio, 400) { // 100 ms each
			if c.WriteMessage(websocket.BinaryMessage, piece) != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); sending.Wait() }()

	// And POSTs, the last with end=1.
	postStart := time.Now()
	var postEnd time.Time
	posted := make(chan struct{})
	go func() {
		defer close(posted)
		chunks := splitEvery(audio[:14*144*12], 14*144) // 12 POSTs of 504 ms
		paced(len(chunks), 504*time.Millisecond, func(i int) {
			q := "/base64?key=secret&id=status-post"
			if i == len(chunks)-1 {
				q += "&end=1"
			}
			if code, r := pub.postRetrying(t, q, base64.StdEncoding.EncodeToString(chunks[i])); code != 200 {
				t.Errorf("POST %d: %d %+v", i, code, r)
			}
		})
		postEnd = time.Now()
	}()

	row := func(id string) string { return fmt.Sprintf("document.querySelector('tr[data-id=%q]')", id) }
	for _, s := range []struct {
		id, transport string
		since         time.Time
	}{{"status-ws", "websocket", wsStart}, {"status-post", "base64", postStart}} {
		waitStatus(t, ctx, s.id+" to show", row(s.id)+" !== null")
		shownWithin(t, ctx, "statusSeen", s.id, s.since, 2*time.Second)
		if got := pageEval[string](t, ctx, row(s.id)+".dataset.transport"); got != s.transport {
			t.Errorf("%s: transport %q, want %q", s.id, got, s.transport)
		}
	}
	for _, id := range []string{"status-ws", "status-post"} {
		first := pageEval[float64](t, ctx, "Number("+row(id)+".dataset.seconds)")
		waitStatus(t, ctx, id+"'s audio to grow", fmt.Sprintf("Number(%s.dataset.seconds) > %v", row(id), first))
	}
	waitStatus(t, ctx, "status-ws to show as healthy", row("status-ws")+".className === 'healthy'")
	for _, id := range []string{"status-ws", "status-post"} {
		waitStatus(t, ctx, id+"'s audio to be sent on", "Number("+row(id)+".dataset.sent) > 0")
	}
	screenshot(t, ctx, "TestStatusPage.png")

	// At phone width every column fits: no sideways scrolling.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 800, chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	if pageEval[bool](t, ctx, "document.documentElement.scrollWidth > window.innerWidth") {
		t.Errorf("the page is %v px wide in a 390 px window", pageEval[float64](t, ctx, "document.documentElement.scrollWidth"))
	}
	screenshot(t, ctx, "TestStatusPage-phone.png")

	<-posted
	waitStatus(t, ctx, "status-post to go", fmt.Sprintf("window.statusGone[%q] !== undefined", "status-post"))
	shownWithin(t, ctx, "statusGone", "status-post", postEnd, 2*time.Second)

	clicked := time.Now()
	pageEval[bool](t, ctx, row("status-ws")+".querySelector('button.end').click() || true")
	pageEval[bool](t, ctx, row("status-ws")+".querySelector('button.end').click() || true") // "Sure?"
	waitStatus(t, ctx, "status-ws to go", fmt.Sprintf("window.statusGone[%q] !== undefined", "status-ws"))
	shownWithin(t, ctx, "statusGone", "status-ws", clicked, 2*time.Second)
	select {
	case err := <-closed:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "ended by the operator" {
			t.Errorf("the WebSocket ended with %v, want 1008 ended by the operator", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the WebSocket was not closed by End")
	}
}
