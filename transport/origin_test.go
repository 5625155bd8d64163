package transport

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
)

func TestCanonicalOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8081":          "http://127.0.0.1:8081",
		"HTTPS://Publisher.Example.COM":  "https://publisher.example.com:443",
		"https://publisher.example.com/": "https://publisher.example.com:443",
		"http://[::1]:8081":              "http://[::1]:8081",
		"http://localhost":               "http://localhost:80",
	} {
		if got, err := canonicalOrigin(in); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"null", "", "publisher.example.com", "ftp://x.example", "https://x.example/path",
		"https://user@x.example", "https://x.example?q=1", "https://:443"} {
		if got, err := canonicalOrigin(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
	if got, err := ParseOrigins(" https://a.example ,*,, http://b.example:8080"); err != nil ||
		strings.Join(got, " ") != "https://a.example:443 * http://b.example:8080" {
		t.Errorf("ParseOrigins: %q %v", got, err)
	}
	if _, err := ParseOrigins("https://a.example, a.example"); err == nil {
		t.Error("an origin without a scheme was accepted")
	}
}

func TestOriginPolicy(t *testing.T) {
	public := newOriginPolicy([]string{"https://publisher.example.com", "http://partner.example:8080"})
	for _, tc := range []struct {
		name, origin, host string
		tls                bool
		policy             originPolicy
		want               bool
	}{
		{"no Origin: an app", "", "127.0.0.1:8081", false, public, true},
		{"own page by IP", "http://127.0.0.1:8081", "127.0.0.1:8081", false, public, true},
		{"own page by IPv6", "http://[::1]:8081", "[::1]:8081", false, public, true},
		{"own page on localhost", "http://localhost:8081", "localhost:8081", false, public, true},
		{"own page over TLS", "https://192.0.2.10:8443", "192.0.2.10:8443", true, public, true},
		{"own page, default port", "http://192.0.2.10", "192.0.2.10:80", false, public, true},
		{"DNS rebinding", "http://evil.example:8081", "evil.example:8081", false, public, false},
		{"rebinding, Host of the server", "http://evil.example:8081", "127.0.0.1:8081", false, public, false},
		{"other scheme", "https://127.0.0.1:8081", "127.0.0.1:8081", false, public, false},
		{"other port", "http://127.0.0.1:9999", "127.0.0.1:8081", false, public, false},
		{"a proxy that drops the port", "http://127.0.0.1:8080", "127.0.0.1", false, public, false},
		{"a name is not trusted from Host", "https://publisher.example.org", "publisher.example.org", true, public, false},
		{"a public origin", "https://publisher.example.com", "10.0.0.5:8081", false, public, true},
		{"a public origin, any case and port spelling", "https://Publisher.example.com:443", "x", false, public, true},
		{"a public origin, other scheme", "http://publisher.example.com", "publisher.example.com", false, public, false},
		{"a public origin, other port", "https://publisher.example.com:8443", "publisher.example.com:8443", true, public, false},
		{"an allowed site", "http://partner.example:8080", "127.0.0.1:8081", false, public, true},
		{"opaque origin", "null", "127.0.0.1:8081", false, public, false},
		{"any", "http://evil.example", "127.0.0.1:8081", false, newOriginPolicy([]string{"*"}), true},
	} {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.Host = tc.host
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := tc.policy.allow(r); got != tc.want {
			t.Errorf("%s: Origin %q, Host %q: allowed %v, want %v", tc.name, tc.origin, tc.host, got, tc.want)
		}
	}
}

// The WebSocket handshake itself: a rebinding-style page is refused with
// 403, the server's own page (by IP) is not, and a trusted proxy that
// terminates TLS says so with X-Forwarded-Proto.
func TestWebSocketOriginAtTheHandshake(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	untrusted := newServer(t, fakeffmpeg.Normal, nil)
	hostPort := strings.TrimPrefix(ts.URL, "http://")
	_, port, _ := strings.Cut(hostPort, ":")
	dial := func(ts *testServer, hdr http.Header) int {
		c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?id=or&key=k", hdr)
		if err == nil {
			c.ReadMessage() // "ready": the server has counted the connection
			c.Close()
		}
		if resp == nil {
			t.Fatalf("no reply: %v", err)
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name   string
		ts     *testServer
		hdr    http.Header
		status int
	}{
		{"rebinding, Host of the server", ts, http.Header{"Origin": {"http://evil.example:" + port}}, 403},
		{"rebinding, Host of the page", ts, http.Header{"Origin": {"http://evil.example:" + port}, "Host": {"evil.example:" + port}}, 403},
		{"own page", ts, http.Header{"Origin": {ts.URL}}, 101},
		{"own page behind a TLS proxy", ts, http.Header{"Origin": {"https://" + hostPort}, "X-Forwarded-Proto": {"https"}}, 101},
		{"X-Forwarded-Proto from anyone else", untrusted, http.Header{"Origin": {"https://" + strings.TrimPrefix(untrusted.URL, "http://")}, "X-Forwarded-Proto": {"https"}}, 403},
	} {
		if got := dial(tc.ts, tc.hdr); got != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.status)
		}
	}
}
