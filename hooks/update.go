package hooks

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"ffmpeg-publisher/session"

	"github.com/sirupsen/logrus"
)

// updater calls on_update for each live stream every interval, on a timer
// per stream, one call at a time per stream. A non-2xx answer revokes the
// stream; no answer keeps it (an application that is down does not end
// every live stream).
type updater struct {
	c        *caller
	interval time.Duration
	revoke   func(session.Stream, *Refusal)
	log      *logrus.Entry
	ctx      context.Context
	cancel   context.CancelFunc

	mu     sync.Mutex // guards the fields below
	timers map[session.Stream]*time.Timer
	closed bool
	calls  sync.WaitGroup // ticks running; Add only under mu while !closed
}

func newUpdater(c *caller, interval time.Duration, revoke func(session.Stream, *Refusal), log *logrus.Entry) *updater {
	u := &updater{c: c, interval: interval, revoke: revoke, log: log.WithField("hook", c.hook),
		timers: map[session.Stream]*time.Timer{}}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	return u
}

func (u *updater) started(st session.Stream) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return
	}
	u.timers[st] = time.AfterFunc(u.interval, func() { u.tick(st) })
}

func (u *updater) ended(st session.Stream) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t := u.timers[st]; t != nil {
		t.Stop()
		delete(u.timers, st)
	}
}

// tick makes one call for st and arms the next.
func (u *updater) tick(st session.Stream) {
	u.mu.Lock()
	if u.closed || u.timers[st] == nil {
		u.mu.Unlock()
		return
	}
	u.calls.Add(1)
	u.mu.Unlock()
	defer u.calls.Done()

	info := st.Info()
	if info.State == session.StateEnding || info.State == session.StateEnded {
		return
	}
	body, err := json.Marshal(figures("on_update", info, nil))
	if err != nil {
		return
	}
	log := u.log.WithField("id", st.ID())
	a, err := u.c.call(u.ctx, body)
	switch {
	case err != nil:
		if u.ctx.Err() == nil {
			log.WithError(err).Warn("the on_update hook did not answer; the stream goes on")
		}
	case !a.ok() && ended(st):
		log.WithField("status", a.status).Info("the on_update hook refused a stream that has ended meanwhile: nothing to revoke")
		return
	case !a.ok():
		ref := a.refusal("revoked by the on_update hook")
		ref.Status, ref.RetryAfter = http.StatusForbidden, "" // a revocation is final
		log.WithFields(logrus.Fields{"status": a.status, "message": ref.Message}).Info("the on_update hook revoked the stream")
		u.revoke(st, ref)
		return
	}
	u.mu.Lock()
	if t := u.timers[st]; t != nil && !u.closed {
		t.Reset(u.interval)
	}
	u.mu.Unlock()
}

// ended tells whether st is ending or has ended: a refusal of it revokes
// nothing, and above all not the next stream of its ID.
func ended(st session.Stream) bool {
	s := st.Info().State
	return s == session.StateEnding || s == session.StateEnded
}

// close stops every timer and waits for the calls in flight.
func (u *updater) close() {
	u.mu.Lock()
	u.closed = true
	for st, t := range u.timers {
		t.Stop()
		delete(u.timers, st)
	}
	u.mu.Unlock()
	u.cancel()
	u.calls.Wait()
}
