package transport

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// A browser tells which page opens a WebSocket in its Origin header; a
// foreign page could otherwise use a visitor's browser to publish. The
// Host header cannot say which origin is the server's own: under DNS
// rebinding, a page at http://evil.example:8081 whose name now resolves to
// this server sends Host evil.example:8081 and a matching Origin. So a
// page is allowed when its origin (scheme, host and port) is configured,
// or when it is the address the request was sent to and that address is
// an IP or localhost, which no DNS answer can stand for.

// originPolicy decides which pages may open a WebSocket.
type originPolicy struct {
	any     bool            // "*" was configured
	allowed map[string]bool // canonical origins
}

func newOriginPolicy(origins []string) originPolicy {
	p := originPolicy{allowed: map[string]bool{}}
	for _, o := range origins {
		if o == "*" {
			p.any = true
		} else if c, err := canonicalOrigin(o); err == nil {
			p.allowed[c] = true
		}
	}
	return p
}

// allow is the WebSocket upgrader's CheckOrigin. Clients that send no
// Origin (apps, mini-programs, command-line tools) are not browsers
// acting for a page, and are allowed.
func (p originPolicy) allow(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || p.any {
		return true
	}
	o, err := canonicalOrigin(origin)
	if err != nil {
		return false
	}
	if p.allowed[o] {
		return true
	}
	own, err := canonicalOrigin(requestScheme(r) + "://" + r.Host)
	return err == nil && o == own && literalHost(own)
}

// literalHost reports whether a canonical origin's host is an IP address
// or localhost (which browsers resolve to the loopback themselves).
func literalHost(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	h := u.Hostname()
	_, err = netip.ParseAddr(h)
	return err == nil || h == "localhost"
}

// canonicalOrigin reduces an origin to scheme://host:port, lowercase, with
// the scheme's default port written out, so that equal origins compare
// equal.
func canonicalOrigin(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	bad := fmt.Errorf("origin %q: want scheme://host[:port], as in https://publisher.example.com", s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return "", bad
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		default:
			return "", bad
		}
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return "", bad
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// ParseOrigins reads a comma-separated list of origins
// (scheme://host[:port]), or "*" for any.
func ParseOrigins(list string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
		case f == "*":
			out = append(out, f)
		default:
			c, err := canonicalOrigin(f)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	return out, nil
}
