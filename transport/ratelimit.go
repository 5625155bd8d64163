package transport

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// clientLimits is a token bucket per client IP. Idle buckets are dropped so
// that a flood of addresses cannot grow it without bound.
type clientLimits struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex // guards the fields below
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// limitIdle: a bucket unused this long is full again anyway, so forget it.
const limitIdle = 5 * time.Minute

// newClientLimits allows perSecond events per client, in bursts of burst;
// perSecond <= 0 disables the limit (nil).
func newClientLimits(perSecond float64, burst int) *clientLimits {
	if perSecond <= 0 {
		return nil
	}
	return &clientLimits{rate: rate.Limit(perSecond), burst: max(burst, 1), buckets: map[string]*bucket{}}
}

// allow takes one event for the client; when it is over its rate it
// returns false and how long until it may try again.
func (l *clientLimits) allow(client string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > limitIdle/5 {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > limitIdle {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b := l.buckets[client]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[client] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// clientIP is the address rate limits are keyed on.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
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
