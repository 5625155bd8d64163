package metrics_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/metrics"
	"ffmpeg-publisher/session"
	"ffmpeg-publisher/transport"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	fakeffmpeg.Main()
	goleak.VerifyTestMain(m)
}

// frames is n MPEG-2 16 kHz mono frames of 144 bytes, 36 ms each.
func frames(n int) []byte {
	f := make([]byte, 144)
	copy(f, []byte{0xFF, 0xF3, 0x48, 0xC0})
	return bytes.Repeat(f, n)
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range fam.GetMetric() {
		for _, l := range m.GetLabel() {
			if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no %s with %v", name, labels)
	return 0
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

func TestCountersAfterAKnownWorkload(t *testing.T) {
	dir := t.TempDir()
	log := logrus.New()
	log.SetOutput(io.Discard)
	m := metrics.New()
	reg := session.NewRegistry(session.Config{
		FFmpeg:   ffpipe.Config{Binary: os.Args[0], ExtraEnv: fakeffmpeg.Env(dir, fakeffmpeg.Normal)},
		RTMPBase: "rtmp://127.0.0.1:1/live",
		Observer: m,
	}, logrus.NewEntry(log))
	api := transport.New(transport.Config{Key: "k", Metrics: m.Handler(), Observer: m}, reg, logrus.NewEntry(log))
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	defer reg.Close(context.Background())

	post := func(q string, n int) int {
		resp, err := http.Post(srv.URL+"/base64?"+q, "text/plain", strings.NewReader(base64.StdEncoding.EncodeToString(frames(n))))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Stream a: 3 POSTs of 25 frames (0.9 s each), the last ends it.
	for i, q := range []string{"key=k&id=a", "key=k&id=a", "key=k&id=a&end=1"} {
		if code := post(q, 25); code != 200 {
			t.Fatalf("post %d: %d", i, code)
		}
	}
	if code := post("key=bad&id=a", 25); code != 403 {
		t.Fatalf("bad key: %d", code)
	}
	// Stream b: one upload of 50 frames (1.8 s).
	resp, err := http.Post(srv.URL+"/live/b?key=k", "audio/mpeg", bytes.NewReader(frames(50)))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", err, resp)
	}
	resp.Body.Close()
	scrape := func() map[string]*dto.MetricFamily { return scrape(t, srv.URL) }
	// Sessions report their end once ffmpeg is reaped; the exit is counted
	// by the ffmpeg's watcher, which may come a moment later.
	fams := scrape()
	for deadline := time.Now().Add(5 * time.Second); value(t, fams, "publisher_sessions_ended_total", map[string]string{"cause": "client"}) < 2 ||
		value(t, fams, "publisher_ffmpeg_exits_total", map[string]string{"cause": "clean"}) < 2; fams = scrape() {
		if time.Now().After(deadline) {
			t.Fatal("sessions did not end")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"publisher_sessions_started_total", nil, 2},
		{"publisher_sessions_live", nil, 0},
		{"publisher_sessions_ended_total", map[string]string{"cause": "client"}, 2},
		{"publisher_sessions_ended_total", map[string]string{"cause": "idle"}, 0},
		{"publisher_received_bytes_total", map[string]string{"transport": "base64"}, 75 * 144},
		{"publisher_received_bytes_total", map[string]string{"transport": "upload"}, 50 * 144},
		{"publisher_received_bytes_total", map[string]string{"transport": "websocket"}, 0},
		{"publisher_ffmpeg_starts_total", nil, 2},
		{"publisher_ffmpeg_exits_total", map[string]string{"cause": "clean"}, 2},
		{"publisher_http_responses_total", map[string]string{"route": "/base64", "code": "200"}, 3},
		{"publisher_http_responses_total", map[string]string{"route": "/base64", "code": "403"}, 1},
		{"publisher_http_responses_total", map[string]string{"route": "/live/{id}", "code": "200"}, 1},
		{"publisher_ack_latency_seconds", nil, 3},
	} {
		if got := value(t, fams, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// Audio seconds: 75 + 50 frames of 36 ms.
	if got := value(t, fams, "publisher_received_audio_seconds_total", map[string]string{"transport": "base64"}); got < 2.699 || got > 2.701 {
		t.Errorf("base64 audio seconds = %v, want 2.7", got)
	}
	if got := value(t, fams, "publisher_stdin_write_seconds", nil); got < 4 {
		t.Errorf("stdin writes observed: %v", got)
	}
}

// Clients behind a trusted proxy fill the request limit's table, which
// stays within its bound by evicting the oldest.
func TestRateLimitTableMetrics(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	m := metrics.New()
	reg := session.NewRegistry(session.Config{RTMPBase: "rtmp://127.0.0.1:1/live"}, logrus.NewEntry(log))
	defer reg.Close(context.Background())
	api := transport.New(transport.Config{
		Metrics: m.Handler(), Observer: m, RateRequests: 0.001, RateClients: 3, // nothing refills during the test
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}, reg, logrus.NewEntry(log))
	m.WatchLimits(api.LimitStats)
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	for i := range 5 {
		req, _ := http.NewRequest("GET", srv.URL+"/streams", nil)
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	fams := scrape(t, srv.URL)
	if got := value(t, fams, "publisher_rate_limit_clients", map[string]string{"limit": "requests"}); got != 3 {
		t.Errorf("clients = %v, want 3 (the bound)", got)
	}
	if got := value(t, fams, "publisher_rate_limit_evictions_total", map[string]string{"limit": "requests"}); got != 2 {
		t.Errorf("evictions = %v, want 2", got)
	}
	if _, ok := fams["publisher_rate_limit_clients"]; ok && len(fams["publisher_rate_limit_clients"].GetMetric()) != 1 {
		t.Error("a series for the sessions limit, which is off")
	}
}
