package hooks

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"time"

	"ffmpeg-publisher/session"

	"github.com/sirupsen/logrus"
)

// Figures is the body of on_update and on_done: a stream's figures so far,
// or final (End and Reason set, on_done).
type Figures struct {
	Event   string    `json:"event"` // on_update or on_done
	CallID  string    `json:"call_id"`
	Attempt int       `json:"attempt"` // 1, then 2… for retries of the same call_id
	Time    time.Time `json:"time"`
	ID      string    `json:"id"`
	// Reason says why the stream ended, in words, Cause in a word (idle,
	// client, deleted, revoked, ffmpeg_failed, not_mp3, shutdown).
	Reason         string     `json:"reason,omitempty"`
	Cause          string     `json:"cause,omitempty"`
	Start          time.Time  `json:"start"`
	End            *time.Time `json:"end,omitempty"`
	Bytes          int64      `json:"bytes"`
	AudioSeconds   float64    `json:"audio_seconds"`
	SilenceSeconds float64    `json:"silence_seconds"`
	Restarts       int        `json:"restarts"`
	DroppedBytes   int64      `json:"dropped_bytes"`
	// Outputs are the stream's output URLs, primary first, shown as in
	// logs (secrets hidden); none if no ffmpeg ever started.
	Outputs   []string `json:"outputs"`
	Transport string   `json:"transport,omitempty"` // of the latest write
}

func figures(event string, info session.Info, end *time.Time) Figures {
	f := Figures{
		Event: event, CallID: newCallID(), Time: time.Now().UTC(), ID: info.ID,
		Start: info.Started.UTC(), End: end, Bytes: info.Bytes, AudioSeconds: info.Seconds,
		SilenceSeconds: info.Silence, Restarts: info.Restarts, DroppedBytes: info.Dropped,
		Outputs: []string{}, Transport: info.Transport,
	}
	for _, o := range info.Outputs.List() {
		f.Outputs = append(f.Outputs, o.URL)
	}
	if end != nil {
		f.Reason, f.Cause = info.EndReason, string(info.Cause)
	}
	return f
}

// on_done retries: quick at first (a hook restarting is back in seconds),
// then no more than twice a minute, and given up after retryFor.
const (
	retryFirst = 500 * time.Millisecond
	retryMax   = 30 * time.Second
	retryFor   = 10 * time.Minute
)

func retryWait(attempt int) time.Duration {
	d := min(retryFirst<<min(attempt-1, 10), retryMax)
	return d - time.Duration(rand.Int64N(int64(d/5)+1))
}

// notifier delivers on_done calls in order from a bounded queue, with one
// worker that retries each until it is answered 2xx or retryFor passes.
type notifier struct {
	c   *caller
	obs Observer
	log *logrus.Entry
	q   chan Figures

	closing chan struct{} // closed by close: deliver what is queued, then stop
	stop    context.Context
	cancel  context.CancelFunc // gives up the queue: close's ctx ended
	done    chan struct{}      // closed when the worker returned

	mu      sync.Mutex // guards the fields below
	closed  bool
	dropped int
}

func newNotifier(c *caller, size int, obs Observer, log *logrus.Entry) *notifier {
	n := &notifier{c: c, obs: obs, log: log.WithField("hook", c.hook), q: make(chan Figures, size),
		closing: make(chan struct{}), done: make(chan struct{})}
	n.stop, n.cancel = context.WithCancel(context.Background())
	go n.run()
	return n
}

// enqueue queues f without waiting; a full queue drops it, counted.
func (n *notifier) enqueue(f Figures) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		n.dropLocked(f, "shutdown")
		return
	}
	select {
	case n.q <- f:
	default:
		n.dropLocked(f, "overflow")
	}
}

func (n *notifier) dropLocked(f Figures, cause string) {
	n.dropped++
	n.obs.HookDropped(n.c.hook, cause)
	n.log.WithFields(logrus.Fields{"id": f.ID, "cause": cause, "dropped_total": n.dropped}).
		Warn("a notification was given up")
}

func (n *notifier) drop(f Figures, cause string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dropLocked(f, cause)
}

func (n *notifier) run() {
	defer close(n.done)
	for {
		select {
		case f := <-n.q:
			n.deliver(f)
		case <-n.closing:
			for {
				select {
				case f := <-n.q:
					n.deliver(f)
				default:
					return
				}
			}
		}
	}
}

// deliver sends f until it is answered 2xx, retryFor passes or the
// notifier is stopped.
func (n *notifier) deliver(f Figures) {
	first := time.Now()
	for f.Attempt = 1; ; f.Attempt++ {
		if n.stop.Err() != nil {
			n.drop(f, "shutdown")
			return
		}
		body, err := json.Marshal(f)
		if err != nil {
			n.log.WithError(err).Error("cannot encode a notification")
			return
		}
		a, err := n.c.call(n.stop, body)
		if err == nil && a.ok() {
			if f.Attempt > 1 {
				n.log.WithFields(logrus.Fields{"id": f.ID, "attempt": f.Attempt}).Info("notification delivered after retries")
			}
			return
		}
		l := n.log.WithFields(logrus.Fields{"id": f.ID, "attempt": f.Attempt})
		if err != nil {
			l = l.WithError(err)
		} else {
			l = l.WithField("status", a.status)
		}
		wait := retryWait(f.Attempt)
		if time.Since(first)+wait > retryFor {
			n.drop(f, "expired")
			return
		}
		if f.Attempt == 1 {
			l.Warn("notification failed; retrying")
		}
		select {
		case <-time.After(wait):
		case <-n.stop.Done():
		}
	}
}

// close delivers what is queued until ctx ends, then gives the rest up.
func (n *notifier) close(ctx context.Context) {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.closing)
	}
	n.mu.Unlock()
	select {
	case <-n.done:
	case <-ctx.Done():
		n.cancel()
		<-n.done
	}
	n.cancel()
}
