package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/admission"
	"ffmpeg-publisher/internal/rtmptest"
)

// noAdmission turns admission control off for the servers of the other
// end-to-end tests: the suite loads its machine past what admission
// control allows, on purpose, and these tests are about other things.
var noAdmission = []string{"-admit-lag", "0", "-admit-starting", "0", "-admit-cpu", "0"}

// writePressure writes PSI text for a CPU pressure of pct.
func writePressure(t *testing.T, path string, pct float64) {
	t.Helper()
	text := "some avg10=" + strconv.FormatFloat(pct, 'f', 2, 64) + " avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // the server never reads half a file
		t.Fatal(err)
	}
}

// waitHTTPStatus polls url until it answers code.
func waitHTTPStatus(t *testing.T, url string, code int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == code {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered %d", url, code)
		}
	}
}

// TestAdmissionFromCPUPressure: the server reads the CPU pressure file it
// is given; at -admit-cpu it turns not ready and refuses new streams with
// 503 and Retry-After, counted in /metrics, and it is ready again once the
// pressure has stayed low (the hysteresis).
func TestAdmissionFromCPUPressure(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg")
	psi := filepath.Join(t.TempDir(), "cpu.pressure")
	writePressure(t, psi, 93.5)
	p := startPublisher(t, "rtmp://127.0.0.1:1/live", func(c *Config) {
		c.Admit = admission.Thresholds{CPU: 60}
		c.AdmitPressure = psi
	})
	waitHTTPStatus(t, p.URL+"/readyz", 503)
	resp, err := p.client.Post(p.URL+"/base64?key=secret&id=refused", "text/plain", strings.NewReader("AAAA"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"errcode":503`) {
		t.Errorf("new stream: %d Retry-After %q %s, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	metrics := get(t, p.URL+"/metrics")
	for _, want := range []string{"publisher_admission_saturated 1", `publisher_admission_refused_total{reason="cpu"} 1`, "publisher_cpu_pressure_percent 93.5"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	writePressure(t, psi, 2)
	waitHTTPStatus(t, p.URL+"/readyz", 200)
	if !strings.Contains(get(t, p.URL+"/metrics"), "publisher_admission_saturated 0") {
		t.Error("/metrics still says saturated")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
