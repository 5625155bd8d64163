package session

import (
	"fmt"
	"time"

	"ffmpeg-publisher/internal/wheel"
)

// checkIdle ends the session once no client wrote for the idle timeout,
// and otherwise returns when that could next happen.
func (s *Session) checkIdle(now time.Time) time.Time {
	s.mu.Lock()
	wait := s.cfg.IdleTimeout - now.Sub(s.lastData)
	if s.inflight > 0 {
		wait = s.cfg.IdleTimeout
	}
	s.mu.Unlock()
	if wait <= 0 {
		s.requestEnd(CauseIdle, fmt.Sprintf("idle for %s", s.cfg.IdleTimeout))
		return time.Time{}
	}
	return now.Add(wait)
}

// minTime is the earliest of ts, ignoring zero times (none due).
func minTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if !t.IsZero() && (m.IsZero() || t.Before(m)) {
			m = t
		}
	}
	return m
}

// Wheel is the registry's timer wheel, for other per-stream periodic work
// (a connection's status messages) to share its wakeups.
func (r *Registry) Wheel() *wheel.Wheel { return r.cfg.wheel }
