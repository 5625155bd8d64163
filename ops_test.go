package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/transport"
)

func TestTokenCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	env := func(k string) string {
		if k == "PUBLISHER_TOKEN_SECRET" {
			return "the-secret-of-this-server"
		}
		return ""
	}
	if code := tokenCommand([]string{"-id", "room1", "-ttl", "2h"}, env, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	token := strings.TrimSpace(out.String())
	if err := transport.VerifyToken([]byte("the-secret-of-this-server"), token, "room1", time.Now().Add(119*time.Minute)); err != nil {
		t.Errorf("minted token does not verify: %v", err)
	}
	if err := transport.VerifyToken([]byte("the-secret-of-this-server"), token, "room1", time.Now().Add(121*time.Minute)); err == nil {
		t.Error("token outlived its ttl")
	}
	errOut.Reset()
	if code := tokenCommand([]string{"-id", "room1"}, func(string) string { return "" }, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), "not enabled") {
		t.Errorf("without a secret: exit %d, %q", code, errOut.String())
	}
	if code := tokenCommand([]string{"-id", "../x", "-token-secret", "s"}, env, io.Discard, io.Discard); code != 2 {
		t.Errorf("invalid id: exit %d", code)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ffmpeg-publisher test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyDER, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile, pool
}

// proc is a process as /proc/PID/stat tells it.
type proc struct {
	pid   int
	comm  string
	state string
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			n, _ := strconv.Atoi(e.Name())
			out = append(out, proc{pid: n, comm: s[open+1 : end], state: fields[0]})
		}
	}
	return out
}

// children lists this test process's children as "pid comm".
func children(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, c := range childrenOf(os.Getpid()) {
		out = append(out, strconv.Itoa(c.pid)+" "+c.comm)
	}
	return out
}

// TestHostileInput throws odd and random requests at a live server (with
// Debian's ffmpeg, publishing nowhere): nothing may panic, answer or count
// a 5xx other than the documented 502/503, start a session for a bad ID,
// or leave a process or goroutine behind (goleak checks goroutines after
// all tests).
func TestHostileInput(t *testing.T) {
	rtmptest.Require(t, "ffmpeg")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "rtmp://" + ln.Addr().String() + "/live"
	ln.Close()
	p := startPublisher(t, dead, func(c *Config) {
		c.RateRequests, c.RateSessions = 0, 0
		c.HeaderTimeout = time.Second
		c.MaxBody = 64 << 10
	})
	get := func(method, path string, hdr http.Header, body io.Reader) int {
		req, err := http.NewRequest(method, p.URL+path, body)
		if err != nil {
			return -1
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return -1
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	audio := rtmptest.MP3(t, 0.3, 16000, 1, "32k", true)
	chunk := base64.StdEncoding.EncodeToString(audio)

	t.Run("bad ids never reach a session", func(t *testing.T) {
		for _, id := range []string{"../etc", "%2e%2e", "%2e%2e%2fetc", "a%2Fb", "a%3Fb", "a%20b", "a+b",
			strings.Repeat("x", 65), "%E7%9B%B4%E6%92%AD", "%00", "a%0d%0aSet-Cookie:x", "'%3B--", "$(id)"} {
			for _, path := range []string{"/base64?key=secret&id=" + id, "/live/" + id + "?key=secret"} {
				code := get("POST", path, nil, strings.NewReader(chunk))
				if code != 400 && code != 404 && code != 301 {
					t.Errorf("POST %s: %d, want 400 (or 404/301 from path cleaning)", path, code)
				}
			}
		}
	})
	t.Run("keys in odd places", func(t *testing.T) {
		for _, tc := range []struct {
			path string
			hdr  http.Header
		}{
			{"/base64?id=a&key=wrong&key=secret", nil},
			{"/base64?id=a&KEY=secret", nil},
			{"/base64?id=a&key=secret%00", nil},
			{"/base64?id=a", http.Header{"X-Key": {"secret"}}},
			{"/base64?id=a", http.Header{"Authorization": {"Basic c2VjcmV0"}}},
			{"/base64?id=a", http.Header{"Cookie": {"key=secret"}}},
			{"/base64?id=a#key=secret", nil},
		} {
			if code := get("POST", tc.path, tc.hdr, strings.NewReader(chunk)); code != 403 {
				t.Errorf("%s %v: %d, want 403", tc.path, tc.hdr, code)
			}
		}
	})
	t.Run("oversized headers", func(t *testing.T) {
		if code := get("GET", "/", http.Header{"X-Big": {strings.Repeat("a", 64<<10)}}, nil); code != 431 {
			t.Errorf("64 KiB header: %d, want 431", code)
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "POST /base64?key=secret&id=slow HTTP/1.1\r\nHost: x\r\n")
		start := time.Now()
		closed := make(chan struct{})
		go func() {
			io.Copy(io.Discard, conn) // returns when the server hangs up
			close(closed)
		}()
		for i := 0; ; i++ {
			select {
			case <-closed:
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("connection held for %s", d)
				}
				return
			case <-time.After(200 * time.Millisecond):
				if _, err := fmt.Fprintf(conn, "X-%d: y\r\n", i); err != nil {
					return // the server hung up
				}
			}
			if i > 50 {
				t.Fatal("slow headers kept the connection open for 10 s")
			}
		}
	})
	t.Run("10000 random requests", func(t *testing.T) {
		methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO"}
		paths := []string{"/", "/base64", "/ws", "/live/", "/live/x", "/streams", "/streams/x", "/tokens",
			"/metrics", "/healthz", "/readyz", "/demo/", "/demo/../../etc/passwd", "/%ff", "//base64", "/base64/"}
		queries := []string{"", "?id=a", "?key=secret&id=r", "?key=secret&id=r&end=1", "?key=secret&id=" + strings.Repeat("z", 300),
			"?key=secret", "?id=&key=", "?%zz", "?token=v1.a.1.x&id=a", "?admin_key=x"}
		var mu sync.Mutex
		bad := map[string]int{}
		codes := map[int]int{}
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(seed uint64) {
				defer wg.Done()
				rng := mrand.New(mrand.NewPCG(seed, 7))
				for i := 0; i < 1250; i++ {
					var body []byte
					switch rng.IntN(4) {
					case 0:
						body = make([]byte, rng.IntN(4096))
						for j := range body {
							body[j] = byte(rng.UintN(256))
						}
					case 1:
						body = []byte(base64.StdEncoding.EncodeToString([]byte(strconv.Itoa(rng.Int()))))
					case 2:
						body = []byte(chunk)
					}
					hdr := http.Header{}
					if rng.IntN(3) == 0 {
						hdr.Set("Content-Type", []string{"application/json", "audio/mpeg", "x/y; charset=\"\\"}[rng.IntN(3)])
					}
					if rng.IntN(4) == 0 {
						hdr.Set("Authorization", []string{"Bearer secret", "Bearer v1.r.9999999999.AAAA", "Basic x"}[rng.IntN(3)])
					}
					if rng.IntN(8) == 0 {
						hdr.Set("Upgrade", "websocket")
						hdr.Set("Connection", "Upgrade")
					}
					path := paths[rng.IntN(len(paths))] + queries[rng.IntN(len(queries))]
					code := get(methods[rng.IntN(len(methods))], path, hdr, bytes.NewReader(body))
					mu.Lock()
					codes[code]++
					if code >= 500 && code != 502 && code != 503 {
						bad[fmt.Sprintf("%d %s", code, path)]++
					}
					mu.Unlock()
				}
			}(uint64(w))
		}
		wg.Wait()
		t.Logf("replies by status (-1: the client refused to send it): %v", codes)
		if codes[-1] > 1000 {
			t.Errorf("only %d of 10000 requests were answered", 10000-codes[-1])
		}
		if len(bad) > 0 {
			t.Errorf("undocumented 5xx replies: %v", bad)
		}
	})
	t.Run("bodies cut short", func(t *testing.T) {
		for _, tc := range []struct{ path, body string }{
			{"/base64?key=secret&id=cut", chunk[:len(chunk)/2]},
			{"/live/cutlive?key=secret", string(audio[:len(audio)/2])},
		} {
			conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n%s", tc.path, tc.body)
			conn.(*net.TCPConn).CloseWrite() // the client goes away mid-body
			if got := ending(conn, 10*time.Second); got != "reply 499" {
				t.Errorf("%s cut short: %s, want reply 499", tc.path, got)
			}
			conn.Close()
		}
	})
	// The metrics agree: no 500, and no 5xx the README does not document.
	counts := responses(p.scrape(t))
	p.client.CloseIdleConnections()
	if bad := undocumented5xx(counts); len(bad) > 0 {
		t.Errorf("undocumented 5xx counted: %v", bad)
	}
	if counts["/base64 499"] == 0 || counts["/live/{id} 499"] == 0 {
		t.Errorf("bodies cut short not counted as 499: %v", counts)
	}
	t.Logf("replies counted: %v", counts)
	// After shutdown no ffmpeg is left.
	p.cancel()
	if err := p.wait(); err != nil {
		t.Fatal(err)
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("child processes left after shutdown: %v", kids)
	}
}

// TestShutdownFlipsReadinessFirst: on SIGTERM (here: the context) /readyz
// turns 503 while streams are still served during -drain-delay, then the
// streams are flushed and the server stops.
func TestShutdownFlipsReadinessFirst(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.DrainDelay = 1500 * time.Millisecond })
	audio := rtmptest.MP3(t, 2.016, 16000, 1, "32k", true)
	post := func(b []byte) int {
		code, _ := p.post(t, "/base64?key=secret&id=drain", strings.NewReader(base64.StdEncoding.EncodeToString(b)))
		return code
	}
	ready := func() int {
		resp, err := p.client.Get(p.URL + "/readyz")
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if post(audio[:len(audio)/2]) != 200 || ready() != 200 {
		t.Fatal("not streaming before the shutdown")
	}
	p.cancel()
	for deadline := time.Now().Add(time.Second); ready() != 503; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not turn 503 at shutdown")
		}
	}
	// Still serving the live stream while draining.
	if code := post(audio[len(audio)/2:]); code != 200 {
		t.Fatalf("POST while draining: %d", code)
	}
	if err := p.wait(); err != nil {
		t.Fatal(err)
	}
	rec := rtmp.WaitRecorded(t, "drain", 1)
	if rec.Duration < 1.9 {
		t.Errorf("recorded %.3f s of 2.016 s acknowledged", rec.Duration)
	}
}

// tlsClient trusts pool.
func tlsClient(pool *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}
