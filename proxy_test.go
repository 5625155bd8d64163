package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/session"
)

// The shipped reverse proxy configs with the real proxies: clients behind
// HAProxy keep their own limits and addresses, and the demo page behind
// nginx on a non-default port opens its WebSocket.

// startHAProxy runs Debian's HAProxy with deploy/haproxy.cfg, its one
// backend the server at backend, and returns the front's base URL.
func startHAProxy(t *testing.T, backend string) string {
	t.Helper()
	bin := rtmptest.Require(t, "haproxy")[0]
	conf := shippedConfig(t, "deploy/haproxy.cfg", backend)
	front := freeAddr(t)
	conf = strings.Replace(conf, "bind :8080", "bind "+front, 1)
	return "http://" + runProxy(t, exec.Command(bin, "-db", "-f", writeTemp(t, "haproxy.cfg", conf)), front)
}

// startNginxProxy runs Debian's nginx with deploy/nginx.conf in its http
// block, its one upstream the server at backend, and returns its address.
func startNginxProxy(t *testing.T, backend string) string {
	t.Helper()
	bin := rtmptest.Require(t, "nginx")[0]
	dir := t.TempDir()
	front := freeAddr(t)
	site := strings.Replace(shippedConfig(t, "deploy/nginx.conf", backend), "listen 8080;", "listen "+front+";", 1)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%[1]s
daemon off;
master_process on;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
%[3]s
}
`, user, dir, site)
	path := filepath.Join(dir, "nginx.conf")
	os.WriteFile(path, []byte(conf), 0o644)
	cmd := exec.Command(bin, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
	return runProxy(t, cmd, front)
}

// shippedConfig reads a deploy/ config and points it at one backend:
// the first instance's address replaced, the others' server lines gone.
func shippedConfig(t *testing.T, file, backend string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(b), "127.0.0.1:8081", backend, 1)
	others := regexp.MustCompile(`(?m)^\s*server .*127\.0\.0\.1:808[23].*\n`)
	if n := len(others.FindAllString(conf, -1)); n != 2 {
		t.Fatalf("%s: found %d server lines for the other instances, want 2", file, n)
	}
	return others.ReplaceAllString(conf, "")
}

func writeTemp(t *testing.T, name, content string) string {
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runProxy starts a proxy and waits until the backend answers through it.
// The proxy runs in its own process group, which is killed at the end:
// nginx's workers would otherwise outlive their master.
func runProxy(t *testing.T, cmd *exec.Cmd, front string) string {
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
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := client.Get("http://" + front + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return front
			}
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %s", filepath.Base(cmd.Path), out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up", filepath.Base(cmd.Path))
		}
	}
}

// clientFrom is an HTTP client whose connections come from the loopback
// address ip, as a distinct client would.
func clientFrom(t *testing.T, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func TestClientsBehindHAProxyKeepTheirOwnLimits(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx", "haproxy")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, func(c *Config) {
		c.RateRequests = 0.001 // one request per client: the second is refused
		c.TrustedProxies = "127.0.0.1"
		c.AdminKey = "admin"
	})
	front := startHAProxy(t, strings.TrimPrefix(pub.URL, "http://"))
	chunk := base64.StdEncoding.EncodeToString(rtmptest.MP3(t, 0.5, 16000, 1, "32k", true))
	post := func(client *http.Client, id, spoof string) int {
		req, _ := http.NewRequest("POST", front+"/base64?key=secret&id="+id, strings.NewReader(chunk))
		req.Header.Set("X-Forwarded-For", spoof) // what a client says of itself counts for nothing
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode >= 500 {
			body, _ := io.ReadAll(resp.Body)
			t.Logf("POST for %s from %s: %d %s", id, spoof, resp.StatusCode, body)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	a, b := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3")
	if code := post(a, "ha-a", "198.51.100.1"); code != 200 {
		t.Fatalf("client A's first request: %d", code)
	}
	if code := post(a, "ha-a", "198.51.100.2"); code != 429 {
		t.Errorf("client A's second request, claiming another address: %d, want 429", code)
	}
	// Behind the same HAProxy, B has a bucket of its own.
	if code := post(b, "ha-b", "198.51.100.1"); code != 200 {
		t.Errorf("client B's first request: %d, want 200 (the same bucket as A?)", code)
	}
	// The stream list and the log name the clients, not HAProxy.
	req, _ := http.NewRequest("GET", pub.URL+"/streams", nil)
	req.Header.Set("Authorization", "Bearer admin")
	resp, err := clientFrom(t, "127.0.0.4").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Streams []session.Info }
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	remote := map[string]string{}
	for _, s := range list.Streams {
		remote[s.ID] = s.Remote
	}
	if remote["ha-a"] != "127.0.0.2" || remote["ha-b"] != "127.0.0.3" {
		t.Errorf("remote in /streams: %v, want ha-a 127.0.0.2, ha-b 127.0.0.3", remote)
	}
	pub.ended.mu.Lock()
	lines := pub.ended.lines["ha-a"]
	pub.ended.mu.Unlock()
	refused := false
	for _, line := range lines {
		if strings.Contains(line, "request refused") {
			refused = true
			if !strings.Contains(line, "remote=127.0.0.2 ") {
				t.Errorf("the refusal is logged without the client's address: %s", line)
			}
		}
	}
	if !refused {
		t.Error("the 429 was not logged")
	}
}

func TestDemoPageBehindNginx(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "nginx", "chromium")
	rtmp := rtmptest.Start(t)
	pub := startPublisher(t, rtmp.URL, func(c *Config) {
		c.GapFill = 0
		c.TrustedProxies = "127.0.0.1"
	})
	front := startNginxProxy(t, strings.TrimPrefix(pub.URL, "http://"))
	ctx := browser(t)
	id := "behind-nginx"
	got := recordInBrowser(t, ctx, "http://"+front+"/demo/?key=secret&id="+id, 3, nil)
	rec := rtmp.WaitRecorded(t, id, 1)
	t.Logf("through nginx on %s: the page captured %.2f s, the RTMP server recorded %.2f s", front, got, rec.Duration)
	if n := rtmp.PublishCount(id); n != 1 {
		t.Errorf("%d publishes, want 1", n)
	}
	if rec.Duration < got*0.9 || rec.Duration > got*1.1 {
		t.Errorf("recorded %.2f s of %.2f s captured", rec.Duration, got)
	}
}

func TestProxyAndOriginFlags(t *testing.T) {
	env := map[string]string{"PUBLISHER_TRUSTED_PROXIES": "10.0.0.0/8, ::1", "PUBLISHER_PUBLIC_ORIGIN": "https://pub.example.com"}
	c, err := parseConfig([]string{"-allowed-origins", "http://partner.example:8080/"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got, err := origins(c)
	if err != nil || strings.Join(got, " ") != "https://pub.example.com:443 http://partner.example:8080" {
		t.Errorf("origins %q %v", got, err)
	}
	for _, bad := range [][]string{{"-trusted-proxies", "10.0.0.0/33"}, {"-trusted-proxies", "proxy.example"},
		{"-public-origin", "pub.example.com"}, {"-allowed-origins", "https://x.example/page"}} {
		if _, err := parseConfig(bad, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}
