package transport

import (
	"encoding/base64"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"
)

func TestClientKeyGroupsIPv6By64(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"[2001:db8:1:2::1]:443", "[2001:db8:1:2:ffff:ffff:ffff:ffff]:80"},
		{"2001:db8:1:2:aaaa::7", "[2001:db8:1:2::1%eth0]:9"},
		{"192.0.2.7:1234", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:1", "192.0.2.7:2"},
	} {
		if ka, kb := clientKey(tc.a), clientKey(tc.b); ka != kb || !ka.IsValid() {
			t.Errorf("%s and %s: keys %v and %v, want the same", tc.a, tc.b, ka, kb)
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"[2001:db8:1:2::1]:443", "[2001:db8:1:3::1]:443"},
		{"192.0.2.7:1", "192.0.2.8:1"},
	} {
		if clientKey(tc.a) == clientKey(tc.b) {
			t.Errorf("%s and %s share a key", tc.a, tc.b)
		}
	}
	if k := clientKey("[2001:db8:1:2:3:4:5:6]:1"); k.String() != "2001:db8:1:2::/64" {
		t.Errorf("key %v", k)
	}
}

func TestRateLimitPer64(t *testing.T) {
	l := newClientLimits(0.001, 1, 0)
	now := time.Now()
	if ok, _ := l.allow(clientKey("[2001:db8::1]:1"), now); !ok {
		t.Fatal("first request refused")
	}
	// Another address in the same /64 shares the bucket, so rotating
	// addresses does not escape the limit.
	if ok, wait := l.allow(clientKey("[2001:db8::2]:1"), now); ok || wait < time.Second {
		t.Errorf("second address of the /64: allowed %v, wait %v", ok, wait)
	}
	if ok, _ := l.allow(clientKey("[2001:db8:0:1::1]:1"), now); !ok {
		t.Error("another /64 refused")
	}
}

func TestRateLimitTableIsBounded(t *testing.T) {
	const size = 100
	l := newClientLimits(0.001, 1, size) // refills in 1000 s: nothing expires here
	now := time.Now()
	key := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32)
	}
	for i := 0; i < 3*size; i++ {
		if ok, _ := l.allow(key(i), now); !ok {
			t.Fatalf("client %d refused on its first request", i)
		}
		if n, _ := l.stats(); n > size {
			t.Fatalf("%d clients in a table of %d", n, size)
		}
	}
	if n, ev := l.stats(); n != size || ev != 2*size {
		t.Errorf("%d clients, %d evicted; want %d, %d", n, ev, size, 2*size)
	}
	// The oldest went first: the newest still has its empty bucket, while
	// an evicted client starts again with a full one.
	if ok, _ := l.allow(key(3*size-1), now); ok {
		t.Error("the newest client's bucket was forgotten")
	}
	if ok, _ := l.allow(key(0), now); !ok {
		t.Error("the oldest client was not evicted")
	}
	// Using a bucket makes it the newest: key(3*size-1) survives the
	// next eviction, key(2*size+1) (now the oldest) does not.
	l.allow(key(3*size-1), now)
	l.allow(key(5000), now)
	if ok, _ := l.allow(key(3*size-1), now); ok {
		t.Error("a client seen recently was evicted")
	}
	if ok, _ := l.allow(key(2*size+1), now); !ok {
		t.Error("the least recently seen client was kept")
	}
}

func TestRateLimitForgetsFullBuckets(t *testing.T) {
	l := newClientLimits(10, 20, 0) // full again 2 s after empty
	now := time.Now()
	for i := 0; i < 50; i++ {
		l.allow(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32), now)
	}
	a := netip.MustParsePrefix("192.0.2.1/32")
	for range 20 {
		l.allow(a, now.Add(time.Second))
	}
	if ok, _ := l.allow(a, now.Add(time.Second)); ok {
		t.Fatal("the 21st request of a burst of 20 was allowed")
	}
	if n, _ := l.stats(); n != 51 {
		t.Fatalf("%d clients, want 51", n)
	}
	// 2.5 s later the first 50 are full again and forgotten; a is not.
	l.allow(netip.MustParsePrefix("192.0.2.2/32"), now.Add(2500*time.Millisecond))
	if n, ev := l.stats(); n != 2 || ev != 0 {
		t.Errorf("%d clients, %d evicted; want 2, 0", n, ev)
	}
	// Refill is exact: after 2 s a has its whole burst back, not more.
	later := now.Add(3 * time.Second)
	for i := range 20 {
		if ok, _ := l.allow(a, later); !ok {
			t.Fatalf("request %d of the refilled burst refused", i)
		}
	}
	if ok, _ := l.allow(a, later); ok {
		t.Error("the refilled bucket held more than its burst")
	}
}

func TestTrustedProxies(t *testing.T) {
	trusted, err := ParseCIDRs("10.0.0.0/8, 127.0.0.1, ::1, 2001:db8:aa::/48")
	if err != nil {
		t.Fatal(err)
	}
	proxies := trustedProxies(trusted)
	for _, tc := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.9", []string{"198.51.100.1"}, "192.0.2.9"},                    // an untrusted peer's header is ignored
		{"127.0.0.1", []string{"198.51.100.1"}, "198.51.100.1"},                 // one trusted proxy
		{"127.0.0.1", []string{"203.0.113.66, 198.51.100.1"}, "198.51.100.1"},   // the client's own entry is ignored
		{"127.0.0.1", []string{"203.0.113.66", "198.51.100.1"}, "198.51.100.1"}, // HAProxy adds a second header
		{"127.0.0.1", []string{"198.51.100.1, 10.1.2.3"}, "198.51.100.1"},       // a chain of trusted proxies
		{"127.0.0.1", []string{"10.9.9.9, 10.1.2.3"}, "10.9.9.9"},               // all trusted: the first
		{"127.0.0.1", []string{"nonsense, 10.1.2.3"}, "10.1.2.3"},               // unreadable: the last proxy
		{"127.0.0.1", []string{"nonsense"}, "127.0.0.1"},                        //
		{"::1", []string{"[2001:db8::5]:4711"}, "2001:db8::5"},                  // with a port
		{"2001:db8:aa:1::1", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},   // mapped
		{"::ffff:10.0.0.1", []string{"198.51.100.1"}, "198.51.100.1"},           // a mapped peer
		{"127.0.0.2", []string{"198.51.100.1"}, "127.0.0.2"},                    // only 127.0.0.1 is trusted
	} {
		got := proxies.client(netip.MustParseAddr(tc.peer).Unmap(), tc.xff)
		if got.String() != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1-10.0.0.9", "fe80::1%eth0"} {
		if _, err := ParseCIDRs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A spoofed X-Forwarded-For from a peer that is not a trusted proxy
// changes nothing: the peer is limited, listed and logged as itself.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted string
		remote  string // of the stream, in /streams
		limited bool   // a second spoofed request is refused
	}{
		{"untrusted peer", "10.0.0.0/8", "127.0.0.1:", true},
		{"trusted peer", "127.0.0.0/8", "198.51.100.2", false}, // the latest write
	} {
		t.Run(tc.name, func(t *testing.T) {
			trusted, _ := ParseCIDRs(tc.trusted)
			ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
				c.RateRequests = 0.001 // one request per client
				c.TrustedProxies = trusted
			})
			post := func(xff string) int {
				body := strings.NewReader(base64.StdEncoding.EncodeToString(mp3(3, 1)))
				req, _ := http.NewRequest("POST", ts.URL+"/base64?key=k&id=spoof", body)
				req.Header.Set("X-Forwarded-For", xff)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			if code := post("198.51.100.1"); code != 200 {
				t.Fatalf("first request: %d", code)
			}
			if code := post("198.51.100.2"); (code == 429) != tc.limited {
				t.Errorf("second request with another X-Forwarded-For: %d", code)
			}
			info, ok := ts.reg.Info("spoof")
			if !ok || !strings.HasPrefix(info.Remote, tc.remote) {
				t.Errorf("remote of the stream: %q, want %q…", info.Remote, tc.remote)
			}
		})
	}
}
