package session

import "time"

// mediaClock relates the audio handed on (client audio and silence) to the
// wall clock since the first of it.
type mediaClock struct {
	t0  time.Time     // when the first audio was handed on
	fed time.Duration // audio handed on since
}

func (c *mediaClock) advance(d time.Duration, now time.Time) {
	if c.t0.IsZero() {
		c.t0 = now
	}
	c.fed += d
}

// lag is how far the audio handed on is behind the wall clock.
func (c *mediaClock) lag(now time.Time) time.Duration { return now.Sub(c.t0) - c.fed }

// gapRetry: a gap fill found a client writing; look again this soon.
const gapRetry = 100 * time.Millisecond

// gapStep: silence goes to ffmpeg in pieces this long (at most half of
// GapFill), ahead of the moment each is due.
const gapStep = 250 * time.Millisecond

// fillGap appends silence to the log while the client is quiet: the media
// clock is kept no more than GapFill behind the wall clock. Client audio is
// never dropped, so a client that stalls and then sends what it queued puts
// the stream ahead of the clock by at most that stall minus GapFill; later
// gaps spend that lead before any silence is added, so the delay does not
// accumulate. It returns when the next fill falls due (zero: none until the
// stream has audio), for run's timer.
func (s *Session) fillGap(now time.Time) (due time.Time) {
	if s.cfg.GapFill <= 0 {
		return time.Time{}
	}
	select {
	case s.wsem <- struct{}{}:
	default:
		return now.Add(gapRetry) // a client is writing: no gap
	}
	defer func() { <-s.wsem }()
	if s.cur == nil || s.clock.t0.IsZero() || s.ending() {
		return time.Time{}
	}
	// Not before the publish, and not within GapFill of it: a client
	// whose first POST waits for the publish is not quiet but waiting for
	// us. Nor while the server drains: a quiet client has most likely
	// moved to another server, and silence here would play before its
	// audio there (drainIdle ends the stream soon).
	s.mu.Lock()
	liveAt := s.liveAt // zero until the current ffmpeg has published
	s.mu.Unlock()
	if liveAt.IsZero() || s.draining.Load() {
		return now.Add(gapRetry)
	}
	next := func() time.Time { return s.clock.t0.Add(s.clock.fed + s.cfg.GapFill + time.Millisecond) }
	if grace := liveAt.Add(s.cfg.GapFill); now.Before(grace) {
		return maxTime(next(), grace)
	}
	lag := s.clock.lag(now)
	if lag <= s.cfg.GapFill {
		return next()
	}
	// Fill a step beyond the threshold, so that a quiet stream wakes once
	// a step rather than once a unit.
	step := min(gapStep, s.cfg.GapFill/2)
	units := s.scan.silence(lag - s.cfg.GapFill + step)
	if units == nil {
		return time.Time{} // a format without silence: no gap fill
	}
	for _, u := range units {
		s.slog.append(u)
	}
	fed := unitsAudio(units)
	s.clock.advance(fed, now)
	s.syncBuffered()
	s.pump()
	s.mu.Lock()
	s.silence += fed
	s.mu.Unlock()
	return next()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
