package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/admission"
	"ffmpeg-publisher/internal/rtmptest"
)

// noAdmission turns admission control off for the servers of the other
// end-to-end tests: the suite loads its machine past what admission
// control allows, on purpose, and these tests are about other things.
var noAdmission = []string{"-admit-lag", "0", "-admit-starting", "0", "-admit-cpu", "0", "-admit-memory", "0"}

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

// TestSaturatedInstanceBehindHAProxy: with the shipped deploy/haproxy.cfg,
// an instance that turns saturated keeps the stream HAProxy placed on it
// (one publish, never seen on another instance), while new IDs go to the
// other instance and start there.
func TestSaturatedInstanceBehindHAProxy(t *testing.T) {
	t.Parallel()
	psi := filepath.Join(t.TempDir(), "cpu.pressure")
	writePressure(t, psi, 0)
	c := startClusterWith(t, 2, func(i int) []string {
		if i == 0 {
			return []string{"-admit-cpu", "50", "-admit-pressure-file", psi}
		}
		return nil
	})
	audio := rtmptest.MP3(t, 12.096, 16000, 1, "32k", true)
	chunks := splitEvery(audio, 14*144)
	// The kept stream: the first candidate ID HAProxy places on instance 0.
	keep := ""
	for i := 0; i < 20 && keep == ""; i++ {
		id := fmt.Sprintf("keep%d", i)
		if !c.post(id, chunks[0], false) {
			t.Fatalf("%s: first chunk refused", id)
		}
		if slices.Contains(c.holders()[0], id) {
			keep = id
		}
	}
	if keep == "" {
		t.Fatal("HAProxy placed none of 20 IDs on instance 0")
	}
	seen := map[int]bool{}
	var newOn [2]int
	var mu sync.Mutex
	saturated := make(chan struct{})
	newDone := make(chan struct{})
	go func() { // new IDs, once instance 0 is saturated: until 6 in a row start
		defer close(newDone)
		<-saturated
		for n, inARow := 0, 0; inARow < 6; n++ {
			if n == 60 {
				t.Errorf("new IDs kept being refused: %d of 60 started on instance 1", newOn[1])
				return
			}
			id := fmt.Sprintf("new%d", n)
			resp, err := c.client.Post(c.URL+"/base64?key=secret&id="+id, "text/plain",
				strings.NewReader(base64.StdEncoding.EncodeToString(chunks[0])))
			if err != nil {
				t.Errorf("%s: %v", id, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				inARow = 0 // instance 0 refused it before HAProxy saw the 404
				continue
			}
			inARow++
			for inst, list := range c.holders() {
				if slices.Contains(list, id) {
					mu.Lock()
					newOn[inst]++
					mu.Unlock()
				}
			}
		}
	}()
	c.stream(keep, audio[len(chunks[0]):], func(i int) {
		for inst, list := range c.holders() {
			if slices.Contains(list, keep) {
				seen[inst] = true
			}
		}
		if i == 1 {
			writePressure(t, psi, 95)
			waitHTTPStatus(t, "http://"+c.addrs[0]+"/readyz?sticky=1", 404)
			close(saturated)
		}
	})
	<-newDone
	mu.Lock()
	defer mu.Unlock()
	if seen[1] || !seen[0] {
		t.Errorf("%s was seen on instances %v, want only 0", keep, seen)
	}
	if newOn[0] != 0 || newOn[1] < 6 {
		t.Errorf("new IDs started on instance 0: %d, on instance 1: %d; want none and at least 6", newOn[0], newOn[1])
	}
	var counts map[string]int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if counts = c.rtmp.PublishCounts(); counts[keep] > 0 {
			break
		}
	}
	if counts[keep] != 1 {
		c.explain(keep)
		t.Errorf("%s: %d publish sessions, want 1", keep, counts[keep])
	}
}

// /readyz puts a broken ffmpeg before saturation: saturation is a 404 under
// ?sticky=1 (keep the IDs here), which must not hide an instance that
// cannot publish anything.
func TestReadinessPutsFFmpegFirst(t *testing.T) {
	broken := fmt.Errorf("ffmpeg cannot run")
	saturated := func() error { return &admission.Saturated{Reason: admission.ReasonCPU} }
	if err := readiness(func() error { return broken }, saturated)(); err != broken {
		t.Errorf("broken and saturated: %v, want ffmpeg's error", err)
	}
	var sat *admission.Saturated
	if err := readiness(func() error { return nil }, saturated)(); !errors.As(err, &sat) {
		t.Errorf("saturated: %v", err)
	}
	if err := readiness(func() error { return nil }, func() error { return nil })(); err != nil {
		t.Errorf("ready: %v", err)
	}
}

// writeMeminfo writes /proc/meminfo text with avail MiB available of 8 GiB.
func writeMeminfo(t *testing.T, path string, availMiB int) {
	t.Helper()
	text := "MemTotal: 8388608 kB\nMemAvailable: " + strconv.Itoa(availMiB<<10) + " kB\n"
	if err := os.WriteFile(path+".tmp", []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestAdmissionFromMemory: below -admit-memory available the server turns
// not ready ("memory" in /readyz) and refuses new streams with 503,
// counted in /metrics with what it read, and takes them again once memory
// has been freed. A server reading this machine's own memory takes them.
func TestAdmissionFromMemory(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg")
	meminfo := filepath.Join(t.TempDir(), "meminfo")
	writeMeminfo(t, meminfo, 100)
	full := startPublisher(t, "rtmp://127.0.0.1:1/live", func(c *Config) {
		c.AdmitMemoryMiB, c.AdmitMemory = 256, admission.Memory{Meminfo: meminfo}
	})
	waitHTTPStatus(t, full.URL+"/readyz", 503)
	if body := get(t, full.URL+"/readyz"); !strings.Contains(body, `"reason":"memory"`) {
		t.Errorf("/readyz: %s", body)
	}
	resp, err := full.client.Post(full.URL+"/base64?key=secret&id=refused", "text/plain", strings.NewReader("AAAA"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "its memory is nearly full") {
		t.Errorf("new stream: %d %s, want 503 naming the memory", resp.StatusCode, body)
	}
	if m := get(t, full.URL+"/metrics"); !strings.Contains(m, `publisher_admission_refused_total{reason="memory"} 1`) || !strings.Contains(m, "publisher_memory_available_bytes 1.048576e+08") {
		t.Error("/metrics lacks the memory refusal or the memory read")
	}
	writeMeminfo(t, meminfo, 4096)
	waitHTTPStatus(t, full.URL+"/readyz", 200)
	roomy := startPublisher(t, "rtmp://127.0.0.1:1/live", func(c *Config) { c.AdmitMemoryMiB = 1 })
	waitHTTPStatus(t, roomy.URL+"/readyz", 200)
}
