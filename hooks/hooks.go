// Package hooks calls the operator's application over HTTP, as nginx-rtmp's
// on_publish, on_update and on_done do: on_publish decides whether a new
// stream may start (and may change its output, name and idle timeout),
// on_update hears of every live stream each interval and may revoke it,
// on_done hears once of every stream's end. Every call is a signed JSON
// POST (sign.go). Notifications never block a stream: on_done goes through
// a bounded queue and one retrying worker, on_update runs on timers of its
// own.
package hooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"ffmpeg-publisher/internal/redact"
	"ffmpeg-publisher/session"

	"github.com/sirupsen/logrus"
)

// Config is the hooks' part of the server's configuration.
type Config struct {
	// OnPublish, OnUpdate and OnDone are the hooks' URLs; "" turns one off.
	OnPublish, OnUpdate, OnDone string
	// Timeout bounds each call; 0 means 2s.
	Timeout time.Duration
	// Interval between on_update calls of a stream; 0 means 30s.
	Interval time.Duration
	// Secret signs every call; empty sends them unsigned.
	Secret []byte
	// FailOpen lets streams start when on_publish does not answer;
	// false (closed) refuses them with 503.
	FailOpen bool
	// RevokedFor: an ID whose stream on_update revoked is refused until
	// no request came for it this long (its client has stopped); 0 means
	// 30s. The server's idle timeout is the natural value.
	RevokedFor time.Duration
	// QueueSize bounds the on_done notifications waiting; 0 means 1024.
	QueueSize int
	// Observer counts calls, for metrics; nil means nobody.
	Observer Observer
	// Client makes the calls; nil means one of the package's own.
	Client *http.Client
}

// Defaults for the zero values of Config.
const (
	DefaultTimeout   = 2 * time.Second
	DefaultInterval  = 30 * time.Second
	DefaultQueueSize = 1024
)

// Observer is told of every call and every notification given up.
type Observer interface {
	// HookCalled: one call to hook (on_publish, on_update, on_done) took
	// took; answered is false when no answer came or it was a 5xx.
	HookCalled(hook string, took time.Duration, answered bool)
	// HookDropped: a notification was given up (cause: overflow,
	// expired, shutdown).
	HookDropped(hook, cause string)
}

type nopObserver struct{}

func (nopObserver) HookCalled(string, time.Duration, bool) {}
func (nopObserver) HookDropped(string, string)             {}

// Hooks is the server's link to the application. It is a session.Watcher;
// transport asks Publish and Revoked before a stream starts.
type Hooks struct {
	cfg     Config
	log     *logrus.Entry
	client  *http.Client
	publish *caller // nil: no on_publish
	update  *updater
	done    *notifier

	mu      sync.Mutex // guards revoked
	revoked map[string]*revocation
}

// revocation is an on_update refusal, remembered while its client goes
// on sending.
type revocation struct {
	err    error
	stream session.Stream // the stream refused: a newer one for the ID is not
	last   time.Time      // the latest request refused with it
}

// New starts the hooks of cfg (the on_done worker, when on_done is set).
// Close stops them.
func New(cfg Config, log *logrus.Entry) *Hooks {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.RevokedFor <= 0 {
		cfg.RevokedFor = session.DefaultIdleTimeout
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	h := &Hooks{cfg: cfg, log: log, client: cfg.Client, revoked: map[string]*revocation{}}
	if h.client == nil {
		h.client = newClient()
	}
	mk := func(hook, url string) *caller {
		return &caller{hook: hook, url: url, shown: redact.URL(url, ""), timeout: cfg.Timeout, secret: cfg.Secret, client: h.client, obs: cfg.Observer}
	}
	if cfg.OnPublish != "" {
		h.publish = mk("on_publish", cfg.OnPublish)
	}
	if cfg.OnUpdate != "" {
		h.update = newUpdater(mk("on_update", cfg.OnUpdate), cfg.Interval, h.revoke, log)
	}
	if cfg.OnDone != "" {
		h.done = newNotifier(mk("on_done", cfg.OnDone), cfg.QueueSize, cfg.Observer, log)
	}
	return h
}

// StreamStarted implements session.Watcher: on_update's timer starts.
func (h *Hooks) StreamStarted(st session.Stream) {
	if h.update != nil {
		h.update.started(st)
	}
}

// StreamEnded implements session.Watcher: on_update's timer stops and
// on_done is queued.
func (h *Hooks) StreamEnded(st session.Stream, final session.Info) {
	if h.update != nil {
		h.update.ended(st)
	}
	if h.done != nil {
		end := time.Now().UTC()
		h.done.enqueue(figures("on_done", final, &end))
	}
}

// Revoked returns the refusal of id's revoked stream while its client
// goes on sending (see Config.RevokedFor), else nil. A stream that took
// the ID meanwhile, not refused, is not refused for it.
func (h *Hooks) Revoked(id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.revoked[id]
	if r == nil {
		return nil
	}
	now := time.Now()
	if now.Sub(r.last) > h.cfg.RevokedFor || r.stream.Superseded() {
		delete(h.revoked, id)
		return nil
	}
	r.last = now
	return r.err
}

// revoke ends st for an on_update refusal and remembers it for the ID.
func (h *Hooks) revoke(st session.Stream, ref *Refusal) {
	now := time.Now()
	h.mu.Lock()
	for id, r := range h.revoked {
		if now.Sub(r.last) > h.cfg.RevokedFor {
			delete(h.revoked, id)
		}
	}
	h.revoked[st.ID()] = &revocation{err: ref, stream: st, last: now}
	h.mu.Unlock()
	st.Revoke(ref)
}

// Close stops on_update's timers and waits for their calls, then lets the
// on_done worker deliver what is queued until ctx ends; what is left is
// given up, counted and logged. Call after the last session has ended.
func (h *Hooks) Close(ctx context.Context) {
	if h.update != nil {
		h.update.close()
	}
	if h.done != nil {
		h.done.close(ctx)
	}
	h.client.CloseIdleConnections()
}

// newCallID names one notification, the same over its retries, so that
// the application can tell a retry from a new call.
func newCallID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}
