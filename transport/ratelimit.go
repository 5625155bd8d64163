package transport

import (
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// DefaultRateClients bounds each limit's table of clients: about 10 MiB of
// buckets, far more clients than one instance serves within a refill time.
const DefaultRateClients = 1 << 16

// clientLimits is a token bucket per client (see clientKey), in a table
// bounded in size. A bucket idle for as long as it takes to refill is
// forgotten, since a new one would be the same; past the bound the least
// recently seen client is forgotten, which can only give it a full bucket
// back, never refuse anyone.
type clientLimits struct {
	perSecond float64
	burst     float64
	refill    time.Duration // from empty to full
	size      int
	epoch     time.Time // bucket times count from here (8 bytes instead of 24)

	mu      sync.Mutex // guards the fields below
	buckets map[netip.Prefix]*bucket
	newest  *bucket // most recently seen; its older neighbours follow
	oldest  *bucket
	evicted uint64 // buckets forgotten to stay within size
}

// bucket is one client's tokens, linked in the order clients were seen.
type bucket struct {
	key          netip.Prefix
	tokens       float64
	at           time.Duration // when tokens was computed, since epoch
	newer, older *bucket
}

// newClientLimits allows perSecond events per client, in bursts of burst,
// keeping at most size clients (0 means DefaultRateClients); perSecond <= 0
// disables the limit (nil).
func newClientLimits(perSecond float64, burst, size int) *clientLimits {
	if perSecond <= 0 {
		return nil
	}
	if size <= 0 {
		size = DefaultRateClients
	}
	b := float64(max(burst, 1))
	return &clientLimits{
		perSecond: perSecond, burst: b, size: size, epoch: time.Now(),
		refill:  time.Duration(b / perSecond * float64(time.Second)),
		buckets: map[netip.Prefix]*bucket{},
	}
}

// allow takes one event for the client; when it is over its rate it
// returns false and how long until it may try again.
func (l *clientLimits) allow(client netip.Prefix, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	at := now.Sub(l.epoch)
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.oldest != nil && at-l.oldest.at > l.refill {
		l.remove(l.oldest)
	}
	b := l.buckets[client]
	if b == nil {
		if len(l.buckets) >= l.size {
			l.remove(l.oldest)
			l.evicted++
		}
		b = &bucket{key: client, tokens: l.burst, at: at}
		l.buckets[client] = b
	} else {
		l.unlink(b)
		b.tokens = min(l.burst, b.tokens+max(0, at-b.at).Seconds()*l.perSecond)
		b.at = max(b.at, at) // concurrent callers read the clock before the lock
	}
	l.pushNewest(b)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.perSecond * float64(time.Second))
}

// Must hold mu.
func (l *clientLimits) remove(b *bucket) {
	l.unlink(b)
	delete(l.buckets, b.key)
}

// Must hold mu.
func (l *clientLimits) unlink(b *bucket) {
	if b.newer != nil {
		b.newer.older = b.older
	} else {
		l.newest = b.older
	}
	if b.older != nil {
		b.older.newer = b.newer
	} else {
		l.oldest = b.newer
	}
	b.newer, b.older = nil, nil
}

// Must hold mu.
func (l *clientLimits) pushNewest(b *bucket) {
	b.older = l.newest
	if l.newest != nil {
		l.newest.newer = b
	} else {
		l.oldest = b
	}
	l.newest = b
}

// stats reports how many clients the table holds and how many were
// evicted to keep it within its bound.
func (l *clientLimits) stats() (clients int, evicted uint64) {
	if l == nil {
		return 0, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets), l.evicted
}

// LimitStats describes one per-client limit's table, for metrics.
type LimitStats struct {
	Limit   string // "requests" or "sessions"
	Clients int    // clients with a bucket now
	Evicted uint64 // buckets forgotten to stay within the bound, ever
}

// LimitStats reports the per-client limits that are on.
func (s *Server) LimitStats() []LimitStats {
	var out []LimitStats
	for _, l := range []struct {
		name string
		lim  *clientLimits
	}{{"requests", s.requests}, {"sessions", s.sessions}} {
		if l.lim != nil {
			n, ev := l.lim.stats()
			out = append(out, LimitStats{Limit: l.name, Clients: n, Evicted: ev})
		}
	}
	return out
}

// clientKey is what a client's limits are kept under: its IPv4 address,
// or the /64 of its IPv6 address, since one subscriber's network is
// usually a /64 whose hosts pick new addresses at will. remote is
// "host:port" or a bare address (a client named by a trusted proxy);
// anything else shares one key.
func clientKey(remote string) netip.Prefix {
	a, ok := parseAddr(remote)
	if !ok {
		return netip.Prefix{}
	}
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// parseAddr reads "host:port" or a bare address; an IPv4-mapped IPv6
// address counts as IPv4, and a zone is dropped.
func parseAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone(""), true
}

// rateLimited is a 429: the client should wait RetryAfter.
type rateLimited struct {
	what       string
	retryAfter time.Duration
}

func (e *rateLimited) Error() string {
	return "too many " + e.what + " from your address, retry in " + strconv.Itoa(retrySeconds(e.retryAfter)) + " s"
}

func retrySeconds(d time.Duration) int { return int(math.Ceil(max(d, time.Second).Seconds())) }
