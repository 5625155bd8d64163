package session

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"ffmpeg-publisher/ffpipe"

	"github.com/sirupsen/logrus"
)

// The restreams' states, as honest as the kernel makes them: ffmpeg says
// nothing when a restream first opens, and a server that takes the
// connection and never answers, or stops reading, fails it only after
// ffmpeg's I/O timeout. So a restream over TCP (rtmp, rtmps) is
// connecting until its server has taken more than the handshakes' bytes
// (openedAfter) on ffmpeg's connection to it, and stalled while bytes wait
// that its server does not take for the stall timeout (the primary's
// stall watch, on the restream's connection: see stall.go). An srt
// restream has no connection to read: it is connecting for SRT's connect
// timeout, then publishing unless ffmpeg reported a failure.

// OutputObserver is told when a restream fails or publishes again, by its
// index (never its URL, which may hold a key). An Observer that implements
// it is called; calls must not block.
type OutputObserver interface {
	OutputDown(index int)
	OutputRecovered(index int)
}

// OutputStallObserver is told when a restream stalls. Optional, as
// OutputObserver.
type OutputStallObserver interface {
	OutputStalled(index int)
}

const (
	// openedAfter: the RTMP handshake (3073 bytes), the publish commands
	// (under 1 KiB) and a TLS handshake stay below it; media pass it.
	openedAfter = 6 << 10
	// srtConnectWait is SRT's connect timeout (libsrt's default 3 s):
	// within it an srt restream has either connected or failed.
	srtConnectWait = 3 * time.Second
)

// Restream failure logs back off: the failure once, then "still down" at
// this pace, then the return once; ffmpeg itself retries every 2 s.
const (
	downLogFirst = 10 * time.Second
	downLogMax   = 5 * time.Minute
)

// downLogAfter is the wait before the n-th "still down" line (n ≥ 1),
// 80-100 % of the doubling step, so that many streams do not log in step.
func downLogAfter(n int) time.Duration {
	d := min(downLogFirst<<min(n-1, 10), downLogMax)
	return d - time.Duration(rand.Int64N(int64(d/5)+1))
}

// outputWatch is run's memory of the current ffmpeg's restreams. The zero
// value is ready.
type outputWatch struct {
	proc  *ffpipe.Proc
	since time.Time // when proc's output opened
	views []restreamView
}

// restreamView is one restream as the watch last saw it.
type restreamView struct {
	state    string
	last     ffpipe.OutputState
	drain    drainMeter
	downAt   time.Time // when it went down; zero while up
	logs     int       // "still down" lines since
	nextLog  time.Time
	stallMsg string
}

// checkOutputs looks at the running ffmpeg's restreams and archive, keeps
// their states for Info, and logs and counts their changes.
func (s *Session) checkOutputs(w *outputWatch, now time.Time) {
	s.mu.Lock()
	p, outs, publishing := s.running, s.outputs, s.ffstate == "publishing"
	s.mu.Unlock()
	s.checkRecording(p)
	if p == nil || len(outs) < 2 || !publishing {
		return
	}
	if p != w.proc {
		*w = outputWatch{proc: p, since: now, views: make([]restreamView, len(outs))}
	}
	ff := p.Outputs()
	shown := make([]OutputInfo, len(outs))
	for i := 1; i < len(outs) && i < len(ff); i++ {
		v := &w.views[i]
		state, why := s.restreamState(p, i, outs[i], ff[i], v, now.Sub(w.since), now)
		s.noteRestream(i, v, ff[i], state, why, now)
		v.state, v.last = state, ff[i]
		shown[i] = OutputInfo{State: state, Error: why, Recoveries: ff[i].Recoveries}
	}
	s.mu.Lock()
	if s.running == p {
		s.restreams = shown
	}
	s.mu.Unlock()
}

// restreamState tells what restream i is now, and why when it is not up.
func (s *Session) restreamState(p *ffpipe.Proc, i int, url string, ff ffpipe.OutputState, v *restreamView, up time.Duration, now time.Time) (string, string) {
	if ff.Down {
		v.drain = drainMeter{}
		return OutputDown, ff.Err
	}
	c, err := p.RestreamConn(i)
	if err != nil {
		v.drain = drainMeter{}
		if !errors.Is(err, ffpipe.ErrNoConn) {
			s.log.WithError(err).Debug("cannot read a restream's connection state")
		}
		if ffpipe.Scheme(url) == "srt" && up >= srtConnectWait {
			return OutputPublishing, ""
		}
		return OutputConnecting, ""
	}
	queued, taken, what := c.Unacked, c.Acked, "acknowledged"
	if c.PeerSeen {
		queued, taken, what = c.Unread, c.Read, "read"
	}
	if taken < openedAfter {
		return OutputConnecting, ""
	}
	if stuck, _ := v.drain.observe(now, queued, taken); stuck >= s.cfg.StallTimeout {
		return OutputStalled, fmt.Sprintf("its server has %s nothing for %s with %d bytes waiting", what, stuck.Round(time.Second), queued)
	}
	return OutputPublishing, ""
}

// noteRestream logs and counts restream i's change to state: a failure
// once and then at a backing-off pace while it lasts, a stall once, the
// return once.
func (s *Session) noteRestream(i int, v *restreamView, ff ffpipe.OutputState, state, why string, now time.Time) {
	obs, _ := s.cfg.Observer.(OutputObserver)
	l := s.log.WithField("output", i)
	switch {
	case state == OutputDown && v.downAt.IsZero():
		v.downAt, v.logs, v.nextLog = now, 0, now.Add(downLogAfter(1))
		l.WithField("error", why).Warn("output failed; ffmpeg retries it, the other outputs go on")
		if obs != nil {
			obs.OutputDown(i)
		}
	case state == OutputDown && !now.Before(v.nextLog):
		v.logs++
		v.nextLog = now.Add(downLogAfter(v.logs + 1))
		l.WithFields(logrus.Fields{"error": why, "down_for": now.Sub(v.downAt).Round(time.Second).String(), "failures": ff.Failures}).
			Warn("output still down; ffmpeg retries it")
	case state != OutputDown && !v.downAt.IsZero() && ff.Recoveries > v.last.Recoveries:
		l.WithFields(logrus.Fields{"down_for": now.Sub(v.downAt).Round(time.Second).String(), "failures": ff.Failures}).
			Info("output publishes again")
		v.downAt = time.Time{}
		if obs != nil {
			obs.OutputRecovered(i)
		}
	}
	switch {
	case state == OutputStalled && v.state != OutputStalled:
		l.Warn("output stalled: " + why + "; ffmpeg fails it once its own buffers are full, the other outputs go on")
		if so, ok := s.cfg.Observer.(OutputStallObserver); ok {
			so.OutputStalled(i)
		}
	case v.state == OutputStalled && state == OutputPublishing:
		l.Info("output takes the stream again")
	}
}
