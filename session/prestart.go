package session

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// prestartBudget bounds the streams whose prestarted ffmpeg waits for its
// first audio: connections that send nothing must not hold ffmpegs and
// -max-sessions slots. A client's first frame follows its connection by
// about one frame, so few wait at once; past the budget a stream starts
// at its first audio, as without -prestart.
const prestartBudget = 16

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
	if !p.prestartAllowed() {
		return nil
	}
	s, err := p.open(ctx)
	if err != nil {
		return err
	}
	s.prestart()
	return nil
}

// Reserve takes the stream's place before its first audio, refused as a
// new stream would be (admission, -max-sessions, on_publish), and
// prestarts its ffmpeg where Prestart would: for a connection that must
// hear a refusal before it is answered (a WHIP offer). A connection that
// leaves before its audio ends the stream (Detach).
func (p *Publisher) Reserve(ctx context.Context) error {
	s, err := p.open(ctx)
	if err == nil && p.prestartAllowed() {
		s.prestart()
	}
	return err
}

// prestartAllowed: -prestart is on and the budget has room.
func (p *Publisher) prestartAllowed() bool {
	return p.r.cfg.Prestart && p.r.waiting.Load() < prestartBudget
}

// open returns p's stream, starting it if it is new.
func (p *Publisher) open(ctx context.Context) (*Session, error) {
	src := p.source()
	s, err := p.r.acquire(p.id, p, &src)
	if err == errApprove {
		if err = src.approve(ctx); err == nil {
			s, err = p.r.acquire(p.id, p, &src)
		}
	}
	p.settle(src, s)
	return s, err
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
	if s.waitingCount != nil && !takeSlot(s.waitingCount) {
		return // the budget is full: the stream starts at its first audio
	}
	if s.startAttempt() != nil {
		if s.waitingCount != nil {
			s.waitingCount.Add(-1)
		}
		return // logged; the first write tries again and reports it
	}
	s.early, s.earlyAt = s.cur.proc, time.Now()
	s.mu.Lock()
	s.waiting = s.early // its slot is taken above
	s.mu.Unlock()
}

// takeSlot counts one more prestarted ffmpeg in n if the budget has room:
// connections arriving together cannot all pass a check and overshoot it.
func takeSlot(n *atomic.Int32) bool {
	for {
		v := n.Load()
		if v >= prestartBudget {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// clearWaiting notes under mu that no prestarted ffmpeg waits for audio
// any more, and gives its slot back.
func (s *Session) clearWaiting() {
	s.mu.Lock()
	was := s.waiting
	s.waiting = nil
	s.mu.Unlock()
	if s.waitingCount != nil && was != nil {
		s.waitingCount.Add(-1)
	}
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
		s.clearWaiting()
	}
}

// checkPrestart ends a stream whose prestarted ffmpeg got no audio within
// PrestartWait: its slot of -max-sessions and of the prestart budget goes
// back, and the connection's first audio, if it ever comes, starts the
// stream anew.
func (s *Session) checkPrestart(now time.Time) {
	select {
	case s.wsem <- struct{}{}:
	default:
		return // a writer is in: audio is coming
	}
	defer func() { <-s.wsem }()
	if s.early == nil || s.ending() {
		return
	}
	if !s.awaitingAudio() || isClosed(s.early.Done()) {
		// It exited before any audio: end the stream as the wait would,
		// rather than hold its place in the budget until the idle timeout.
		s.requestEnd(CauseIdle, "the ffmpeg started before the audio exited")
		return
	}
	if now.Sub(s.earlyAt) < s.cfg.PrestartWait {
		return
	}
	s.log.WithField("pid", s.early.Pid()).Infof("no audio within %s of the connection: the ffmpeg started for it is stopped", s.cfg.PrestartWait)
	s.requestEnd(CauseIdle, fmt.Sprintf("no audio within %s of the connection", s.cfg.PrestartWait))
}

// unfed tells whether no audio was ever written to the session: a
// connection that leaves it so takes its prestarted stream along, rather
// than holding a session and a slot of -max-sessions for the idle timeout.
func (s *Session) unfed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes == 0
}
