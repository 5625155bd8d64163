package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"

	"github.com/chromedp/chromedp"
)

// The in-page recorder in Debian's Chromium, headless, with a fake
// microphone (a tone): start, stream about 5 s, stop; the RTMP server must
// have one publish of AAC as long as what the page captured.

// dropProxy forwards loopback connections to a backend and can cut them
// all, as a flaky network would.
type dropProxy struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newDropProxy(t *testing.T, backend string) *dropProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, backend: backend}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(b, c); b.Close() }()
			go func() { defer p.wg.Done(); io.Copy(c, b); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.drop(); p.wg.Wait() })
	return p
}

func (p *dropProxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func browser(t *testing.T) context.Context {
	t.Helper()
	chromium := rtmptest.Require(t, "chromium")[0]
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelT(); cancel(); cancelA() })
	return ctx
}

func evalString(t *testing.T, ctx context.Context, js string) string {
	t.Helper()
	return pageEval[string](t, ctx, js)
}

// pageEval evaluates js in the page; a failed evaluation fails the test.
func pageEval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitPage polls js (a boolean expression) in the recorder page.
func waitPage(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	waitJS(t, ctx, what, js, "`status ${document.getElementById('status').textContent}, error ${document.getElementById('error').textContent}`")
}

// waitJS polls js (a boolean expression) in the page; on a timeout the
// failure shows what the expression shows evaluates to.
func waitJS(t *testing.T, ctx context.Context, what, js, shows string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; the page shows %q", what, pageEval[string](t, ctx, shows))
		}
	}
}

func captured(t *testing.T, ctx context.Context) float64 {
	v, _ := strconv.ParseFloat(evalString(t, ctx, "document.body.dataset.captured || '0'"), 64)
	return v
}

// recordInBrowser streams from the page for about seconds, calling midway
// (if not nil) halfway through, and returns what the page captured.
func recordInBrowser(t *testing.T, ctx context.Context, pageURL string, seconds float64, midway func()) float64 {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL), chromedp.WaitVisible(chromedp.ID("start")), chromedp.Click(chromedp.ID("start"))); err != nil {
		t.Fatal(err)
	}
	waitPage(t, ctx, "the stream to go live", "document.getElementById('status').textContent.startsWith('Live')")
	half := false
	for captured(t, ctx) < seconds {
		if midway != nil && !half && captured(t, ctx) > seconds/2 {
			half = true
			midway()
		}
		time.Sleep(50 * time.Millisecond)
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err == nil {
		dir := filepath.Join("test-artifacts")
		os.MkdirAll(dir, 0o755)
		name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + ".png"
		os.WriteFile(filepath.Join(dir, name), shot, 0o644)
	}
	if errText := evalString(t, ctx, "document.getElementById('error').hidden ? '' : document.getElementById('error').textContent"); errText != "" {
		t.Errorf("the page shows an error: %q", errText)
	}
	// The button's own click: a mouse click at its coordinates missed it
	// on a loaded machine (the page went on streaming).
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(document.getElementById('stop').click(), true)`)); err != nil {
		t.Fatal(err)
	}
	got := captured(t, ctx)
	waitPage(t, ctx, "the page to stop", "document.getElementById('status').textContent.startsWith('Stopped')")
	return got
}

func TestBrowserRecorder(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "nginx", "chromium")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, func(c *Config) { c.GapFill = 0 })
	for _, format := range []string{"mp3", "webm", "pcm"} {
		t.Run(format, func(t *testing.T) {
			ctx := browser(t)
			id := "browser-" + format
			got := recordInBrowser(t, ctx, pub.URL+"/demo/?key=secret&id="+id+"&format="+format, 5, nil)
			rec := rtmp.WaitRecorded(t, id, 1)
			t.Logf("%s: the page captured %.2f s, the RTMP server recorded %.2f s (%s, %d Hz)", format, got, rec.Duration, rec.Codecs, rec.Rate)
			if n := rtmp.PublishCount(id); n != 1 || rec.Codecs != "aac" {
				t.Errorf("%d publishes, codecs %q; want one AAC publish", n, rec.Codecs)
			}
			// The page stops once it has 5 s, later on a loaded machine:
			// what it captured is the measure.
			if rec.Duration < 4.5 || rec.Duration < got*0.9 || rec.Duration > got*1.1 {
				t.Errorf("recorded %.2f s, want what the page captured (%.2f s, at least 5) ± 10%%", rec.Duration, got)
			}
		})
	}
	t.Run("reconnects after a dropped connection", func(t *testing.T) {
		proxy := newDropProxy(t, strings.TrimPrefix(pub.URL, "http://"))
		ctx := browser(t)
		id := "browser-drop"
		got := recordInBrowser(t, ctx, "http://"+proxy.ln.Addr().String()+"/demo/?key=secret&id="+id, 6, func() {
			proxy.drop()
			waitPage(t, ctx, "a reconnection", "document.body.dataset.connects === '2'")
		})
		rec := rtmp.WaitRecorded(t, id, 1)
		t.Logf("captured %.2f s across a dropped connection, recorded %.2f s in %d publish(es)", got, rec.Duration, rtmp.PublishCount(id))
		if n := rtmp.PublishCount(id); n != 1 {
			t.Errorf("%d publishes: the stream did not continue", n)
		}
		if rec.Duration < got*0.9 || rec.Duration > got*1.1 {
			t.Errorf("recorded %.2f s of %.2f s captured", rec.Duration, got)
		}
	})
}
