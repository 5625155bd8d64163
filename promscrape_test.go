package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
)

// A real Prometheus, loaded with the shipped rules, scrapes a publisher
// that streams two IDs; the test asks Prometheus what it saw.

type promServer struct {
	url    string
	client *http.Client
}

// startPrometheus runs Debian's prometheus on a free loopback port,
// scraping target every second and evaluating deploy/prometheus's rules.
func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	bin := rtmptest.Require(t, "prometheus")[0]
	dir := t.TempDir()
	rules, err := filepath.Abs(promDir)
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %s/rules.yml
  - %s/alerts.yml
scrape_configs:
  - job_name: ffmpeg-publisher
    static_configs:
      - targets: [%q]
`, rules, rules, target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "--config.file="+writeTemp(t, "prometheus.yml", config),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	p := &promServer{url: "http://" + addr, client: &http.Client{Timeout: 5 * time.Second}}
	t.Cleanup(p.client.CloseIdleConnections)
	startAndWait(t, cmd, p.url+"/-/ready")
	return p
}

// startAndWait starts cmd in its own process group, killed at the end,
// and waits until ready answers 200.
func startAndWait(t *testing.T, cmd *exec.Cmd, ready string) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-exited })
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := client.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %s", filepath.Base(cmd.Path), out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up: %s", filepath.Base(cmd.Path), out.String())
		}
	}
}

// promSample is one series of an instant query's result.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant query at Prometheus's now.
func (p *promServer) query(t *testing.T, expr string) []promSample {
	t.Helper()
	resp, err := p.client.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s %s", expr, err, r.Status, r.Error)
	}
	var out []promSample
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, _ := strconv.ParseFloat(str, 64)
		out = append(out, promSample{s.Metric, v})
	}
	return out
}

// scalar is the value of a query that returns one series; NaN if none.
func (p *promServer) scalar(t *testing.T, expr string) float64 {
	t.Helper()
	res := p.query(t, expr)
	if len(res) != 1 {
		return math.NaN()
	}
	return res[0].Value
}

// waitQuery polls expr until ok accepts its value.
func (p *promServer) waitQuery(t *testing.T, expr string, ok func(float64) bool) float64 {
	t.Helper()
	var v float64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if v = p.scalar(t, expr); ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting on %s: last %v", expr, v)
		}
	}
}

func TestPrometheusScrapesPublisher(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx", "prometheus")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, func(c *Config) { c.MaxSessions = 20 })
	// Two IDs, 16 kHz mono at 32 kbps: 4000 bytes per second each, in
	// POSTs of 504 ms, for 10 s. They start with Prometheus, whose first
	// scrape comes about 5 s later (its target discovery reports every 5 s).
	audio := rtmptest.MP3(t, 10.08, 16000, 1, "32k", true)
	chunks := splitEvery(audio, 14*144)
	prom := startPrometheus(t, strings.TrimPrefix(pub.URL, "http://"))
	job := `{job="ffmpeg-publisher"}`
	ids := []string{"prom-a", "prom-b"}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() { defer wg.Done(); pub.postChunks(t, id, chunks, 504*time.Millisecond) }()
	}
	prom.waitQuery(t, "publisher_sessions_live"+job, func(v float64) bool { return v == 2 })
	// The limit comes from -max-sessions, through the recording rule.
	prom.waitQuery(t, "instance:publisher_sessions:utilisation"+job, func(v float64) bool { return v == 0.1 })
	// A rate over 3 s, once 3 s of scrapes saw both streams live: 8000
	// B/s together (bounds wide: a loaded machine posts in bursts).
	rate := prom.waitQuery(t, `sum(rate(publisher_received_bytes_total{transport="base64"}[3s]))
		and on() (min_over_time(publisher_sessions_live[3s]) == 2) and on() (count_over_time(publisher_sessions_live[3s]) >= 3)`,
		func(v float64) bool { return !math.IsNaN(v) })
	t.Logf("received %.0f B/s by Prometheus's rate over 3 s; sent 8000 B/s", rate)
	if rate < 4000 || rate > 16000 {
		t.Errorf("rate of received bytes %.0f B/s, want about 8000", rate)
	}
	wg.Wait()
	// All the bytes posted, once the streams have ended.
	prom.waitQuery(t, "publisher_sessions_live"+job, func(v float64) bool { return v == 0 })
	want := float64(2 * len(audio))
	prom.waitQuery(t, `sum(publisher_received_bytes_total{transport="base64"})`, func(v float64) bool { return v == want })
	if got := prom.scalar(t, `publisher_sessions_started_total`+job); got != 2 {
		t.Errorf("sessions started %v, want 2", got)
	}

	// Every rule loaded and evaluated without error; no alert fires.
	resp, err := prom.client.Get(prom.url + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError, State, Type string
				}
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" || r.LastError != "" || r.State == "firing" {
				t.Errorf("rule %s: health %q, state %q, error %q", r.Name, r.Health, r.State, r.LastError)
			}
		}
	}
	if want := shippedRules(t); n != want {
		t.Errorf("%d rules loaded, want the %d in deploy/prometheus", n, want)
	}
	// Every dashboard query has data from a real server.
	for _, expr := range dashboardExprs(t) {
		if len(prom.query(t, expr)) == 0 {
			t.Errorf("dashboard query %s: no data", expr)
		}
	}
}

// shippedRules counts the recording and alerting rules of the shipped files.
func shippedRules(t *testing.T) int {
	t.Helper()
	n := 0
	for _, f := range []string{"deploy/prometheus/rules.yml", "deploy/prometheus/alerts.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n += len(ruleLine.FindAll(b, -1))
	}
	return n
}

var ruleLine = regexp.MustCompile(`(?m)^\s*- (alert|record):`)
