package session

import (
	"context"
	"time"
)

// A connection (a WebSocket, a streaming upload) fixes its stream's format
// before its first byte, so the stream's ffmpeg can start then: exec and
// loading its libraries overlap the client's first frame instead of
// following it. Such an ffmpeg reads its input before it opens its output,
// so until audio comes it has no RTMP connection and publishes nothing;
// closing its stdin ends it without a trace.

// Prestart starts the ffmpeg of p's stream before the stream's first
// audio, when that stream is new and the connection fixes ffmpeg's
// arguments (not MP3 passed through, whose codec depends on its first
// frame). A stream that needs approval (on_publish) is approved here, once:
// its error is the approval's or the registry's refusal, which the first
// write would have met too.
func (p *Publisher) Prestart(ctx context.Context) error {
	if !p.r.cfg.Prestart {
		return nil
	}
	p.mu.Lock()
	src := p.src
	p.mu.Unlock()
	s, err := p.r.acquire(p.id, p, &src)
	if err == errApprove {
		if err = src.approve(ctx); err == nil {
			s, err = p.r.acquire(p.id, p, &src)
		}
	}
	p.mu.Lock()
	p.src.Overrides, p.src.Approved = src.Overrides, src.Approved // spent once it started a stream
	if s != nil {
		p.last = s
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	s.prestart()
	return nil
}

// prestart starts the session's first ffmpeg before any audio, if its
// arguments are known.
func (s *Session) prestart() {
	select {
	case s.wsem <- struct{}{}:
	case <-s.endReq:
		return
	}
	defer func() { <-s.wsem }()
	if s.ending() || s.cur != nil || s.retrying || s.slog.end() > 0 || s.everStarted() || !s.argsFixed() {
		return
	}
	if s.startAttempt() != nil {
		return // logged; the first write tries again and reports it
	}
	s.early, s.earlyAt = s.cur.proc, time.Now()
	s.mu.Lock()
	s.waiting = s.early
	s.mu.Unlock()
}

// argsFixed tells whether ffmpeg's arguments are known before the first
// unit. Must hold wsem.
func (s *Session) argsFixed() bool {
	if c, ok := s.scan.(interface{ alwaysCopy() bool }); ok && c.alwaysCopy() {
		return true
	}
	return s.cfg.FFmpeg.AudioCodec != "copy" // copy depends on the first frame: see flvCarries
}

// awaitingAudio tells whether the running ffmpeg was prestarted and has
// been given nothing yet. Must hold wsem.
func (s *Session) awaitingAudio() bool {
	return s.early != nil && s.cur != nil && s.cur.proc == s.early
}

// gotAudio notes that the running ffmpeg was given audio. Must hold wsem.
func (s *Session) gotAudio() {
	if s.early != nil {
		s.early = nil
		s.mu.Lock()
		s.waiting = nil
		s.mu.Unlock()
	}
}

// checkPrestart stops a prestarted ffmpeg that got no audio within
// PrestartWait; the stream's first audio starts another.
func (s *Session) checkPrestart(now time.Time) {
	select {
	case s.wsem <- struct{}{}:
	default:
		return // a writer is in: audio is coming
	}
	defer func() { <-s.wsem }()
	if !s.awaitingAudio() || s.ending() || now.Sub(s.earlyAt) < s.cfg.PrestartWait {
		return
	}
	p := s.early
	s.early = nil
	s.log.WithField("pid", p.Pid()).Infof("no audio within %s of the connection: stopping the ffmpeg started for it", s.cfg.PrestartWait)
	s.closeAttempt(now)
	s.mu.Lock()
	if s.running == p {
		s.running = nil
	}
	s.ffstate = "exited"
	s.waiting = nil
	s.mu.Unlock()
}

// unfed tells whether no audio was ever written to the session: a
// connection that leaves it so takes its prestarted stream along, rather
// than holding a session and a slot of -max-sessions for the idle timeout.
func (s *Session) unfed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes == 0 && s.pid != 0
}
