package transport

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Behind a reverse proxy every connection comes from the proxy, which
// names the client in X-Forwarded-For, each proxy appending the address it
// took the request from. Only the proxies in Config.TrustedProxies are
// believed, and only about the hops they saw: the client is the rightmost
// address in the chain that is not a trusted proxy. Anything a client
// writes into the header itself sits to the left of that and is ignored.

// ParseCIDRs reads a comma-separated list of CIDRs ("10.0.0.0/8") or
// single addresses ("127.0.0.1", "::1").
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, unmapPrefix(p).Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not a CIDR (10.0.0.0/8) or an address", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// unmapPrefix turns ::ffff:10.0.0.0/104 into 10.0.0.0/8, so that it
// matches the unmapped addresses it is compared with.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// trustedProxies are the peers whose X-Forwarded-For is believed.
type trustedProxies []netip.Prefix

func (t trustedProxies) trusts(a netip.Addr) bool {
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// client returns the address of the client behind peer, as the trusted
// proxies in the chain tell it: xff holds the X-Forwarded-For headers in
// the order received. An entry that is not an address ends the walk at the
// last hop that could be read, the proxy that passed it on.
func (t trustedProxies) client(peer netip.Addr, xff []string) netip.Addr {
	client := peer
	for i := len(xff) - 1; i >= 0 && t.trusts(client); i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0 && t.trusts(client); j-- {
			a, ok := parseAddr(strings.TrimSpace(hops[j]))
			if !ok {
				return client
			}
			client = a
		}
	}
	return client
}

// forwardedKey marks a request that came through a trusted proxy; its
// value is the scheme the proxy was reached with (X-Forwarded-Proto).
type forwardedKey struct{}

// realClient puts the client's address in RemoteAddr of requests that
// come through a trusted proxy, so that limits, logs and the stream list
// all see the client, not the proxy. The address has no port: the proxy
// does not tell it.
func (s *Server) realClient(next http.Handler) http.Handler {
	if len(s.proxies) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, ok := parseAddr(r.RemoteAddr)
		if !ok || !s.proxies.trusts(peer) {
			next.ServeHTTP(w, r)
			return
		}
		proto := strings.ToLower(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")))
		r = r.WithContext(context.WithValue(r.Context(), forwardedKey{}, proto))
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			r.RemoteAddr = s.proxies.client(peer, xff).String()
		}
		next.ServeHTTP(w, r)
	})
}

// requestScheme is the scheme the client used: https when the server
// terminates TLS, or when a trusted proxy says the client reached it so.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if proto, _ := r.Context().Value(forwardedKey{}).(string); proto == "https" {
		return "https"
	}
	return "http"
}
