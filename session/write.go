package session

import (
	"context"
	"errors"
	"time"

	"ffmpeg-publisher/ffpipe"
)

// write appends p to the stream's log and hands it to ffmpeg. It waits for
// earlier writers (giving up when ctx ends) and returns once the audio is
// in the log, which is what its acknowledgement means. With awaitStart
// (one-shot POSTs), a write made before the stream ever published then
// waits, without the writer lock, until an ffmpeg has opened the publish:
// an unreachable RTMP server fails this request (its audio is taken back
// out of the log) rather than a later one. Connections learn it from
// status messages instead. With fresh, p does not follow the bytes before
// it (a seq gap, a new recording): what the scanner carried over from them
// is dropped.
func (s *Session) write(ctx context.Context, src Source, p []byte, awaitStart, fresh bool) (Result, error) {
	s.enter()
	defer s.leave() // the wait for the publish counts too: the stream is not idle
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case <-s.endReq:
		return Result{}, errEnded
	}
	res, mark, proc, err := s.writeLocked(src, p, fresh)
	n := s.writes
	<-s.wsem
	if err == nil && proc != nil && awaitStart {
		if err = s.awaitPublish(ctx, proc); err != nil && !s.retract(mark, n, res) {
			err = nil // others wrote after it: it stays, acknowledged, and is retried
		}
	}
	return res, err
}

// writeLocked does write's work: it returns the log position the write
// started at and, while the stream has not published yet, the ffmpeg that
// should publish it. Must hold wsem.
func (s *Session) writeLocked(src Source, p []byte, fresh bool) (Result, int64, *ffpipe.Proc, error) {
	s.mu.Lock()
	if s.endReason != "" {
		s.mu.Unlock()
		return Result{}, 0, nil, errEnded
	}
	s.source = src
	failed := s.errLocked()
	published := s.published
	s.mu.Unlock()
	// Never live and a retry of held audio is under way: say why rather
	// than pile up audio (the client sends it again).
	if failed != nil && (s.cur != nil || s.retrying) {
		return Result{}, 0, nil, failed
	}

	s.writes++ // a later write moves the scanner's mark: see retract
	s.scan.mark()
	if d, ok := s.scan.(interface{ dropCarry() }); ok && fresh {
		d.dropCarry() // after the mark: a refused write brings it back
	}
	units, err := s.scan.feed(p)
	if err != nil {
		s.scan.rollback()
		if !s.everStarted() {
			s.requestEnd(CauseNotMP3, "first data was not in the stream's format")
		}
		return Result{}, 0, nil, err
	}
	audio := unitsAudio(units)
	s.observeProgress()
	if s.overBuffer(units, audio) {
		s.scan.rollback()
		return Result{}, 0, nil, ErrBufferFull
	}

	if failed != nil {
		s.mu.Lock()
		s.restarts++ // the client's retry starts the next ffmpeg
		s.mu.Unlock()
	}
	mark := s.slog.end()
	for _, u := range units {
		s.slog.append(u)
	}
	if audio > 0 {
		s.clock.advance(audio, time.Now())
	}
	s.syncBuffered()
	if len(units) > 0 {
		if err := s.pump(); err != nil {
			s.scan.rollback()
			s.slog.truncate(mark)
			s.syncBuffered()
			return Result{}, 0, nil, err
		}
	}
	s.countAccepted(len(p), audio, src.Transport)
	var proc *ffpipe.Proc
	if !published && s.cur != nil && !s.nameHeld() {
		proc = s.cur.proc // wait for its publish; not while a name is held, where the audio waits in the log
	}
	return Result{Bytes: int64(len(p)), Audio: audio}, mark, proc, nil
}

// enter and leave bracket a client's write: the idle timeout and the drain
// count from the last one to leave.
func (s *Session) enter() {
	s.mu.Lock()
	s.inflight++
	s.lastData = time.Now()
	s.mu.Unlock()
}

func (s *Session) leave() {
	s.mu.Lock()
	s.inflight--
	s.lastData = time.Now()
	s.mu.Unlock()
}

// nameHeld tells whether the last ffmpeg was refused a name another
// publisher still holds.
func (s *Session) nameHeld() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil && s.err.nameTaken()
}

// countAccepted adds an accepted write to the totals. Must hold wsem.
func (s *Session) countAccepted(bytes int, audio time.Duration, transport string) {
	s.mu.Lock()
	s.bytes += int64(bytes)
	s.audio += audio
	s.mu.Unlock()
	if transport != "" {
		s.cfg.Observer.Accepted(transport, bytes, audio)
	}
}

// overBuffer tells whether units would take the unconfirmed audio beyond
// the buffer. A write into an empty buffer is taken whole whatever its
// size, so one large body is never refused for good. Must hold wsem.
func (s *Session) overBuffer(units []unit, audio time.Duration) bool {
	l := &s.slog
	if l.pendBytes == 0 {
		return false
	}
	size := 0
	for _, u := range units {
		size += len(u.data)
	}
	return (s.cfg.BufferBytes > 0 && l.pendBytes+size > s.cfg.BufferBytes) ||
		(s.cfg.BufferAudio > 0 && l.pendAudio+audio > s.cfg.BufferAudio)
}

// syncBuffered publishes the log's unconfirmed size. Must hold wsem.
func (s *Session) syncBuffered() {
	s.mu.Lock()
	delta := s.slog.pendBytes - s.buffered
	s.buffered = s.slog.pendBytes
	s.held = s.slog.pendAudio
	s.mu.Unlock()
	if delta != 0 {
		s.cfg.Observer.Buffered(delta)
	}
}

// observeProgress confirms what the running ffmpeg reports it sent. Must
// hold wsem.
func (s *Session) observeProgress() {
	if a := s.cur; a != nil {
		s.slog.confirm(a.progress(&s.slog, a.proc.Progress().OutTime))
		s.syncBuffered()
	}
}

// tryObserveProgress is observeProgress unless a writer holds the log (it
// observes it itself).
func (s *Session) tryObserveProgress() {
	select {
	case s.wsem <- struct{}{}:
		s.observeProgress()
		<-s.wsem
	default:
	}
}

// everStarted tells whether an ffmpeg was ever started for the session
// and given audio. Must hold wsem.
func (s *Session) everStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid != 0 && !s.awaitingAudio()
}

// pump hands the log to ffmpeg: it starts one when none runs and none is
// scheduled, and moves to a new one at a segment boundary. It returns an
// error only when ffmpeg cannot be started at all. Must hold wsem.
func (s *Session) pump() error {
	for {
		if s.cur == nil {
			if s.retrying || !s.unsent() {
				return nil // held until the scheduled restart
			}
			if err := s.startAttempt(); err != nil {
				if !s.everStarted() {
					s.requestEnd(CauseFFmpeg, err.Error())
				}
				return err
			}
		}
		a := s.cur
		if a.segmentDone(&s.slog) {
			s.log.Info("the audio format changed (a new recording): ffmpeg flushes and a new one starts")
			s.closeAttempt(time.Now())
			continue
		}
		start := time.Now()
		written, err := a.pump(&s.slog, s.cfg.WriteTimeout)
		if err == nil && written {
			s.gotAudio()
			s.cfg.Observer.StdinWritten(time.Since(start))
			s.mu.Lock()
			s.lastWrite = time.Now()
			s.mu.Unlock()
		}
		if stuck(err) {
			why := "ffmpeg took no input for " + s.cfg.WriteTimeout.String()
			s.log.Warn(why + "; restarting it")
			s.killOnPurpose(a.proc, why)
		}
		// Other errors: the ffmpeg is going away; its watcher restarts.
		return nil
	}
}

// awaitPublish waits until an ffmpeg of the session has opened its output,
// or proc failed (an error unless it was refused a name another publisher
// still holds), or StartTimeout passed; in the last two cases the audio
// stays in the log and is sent when the publish opens.
func (s *Session) awaitPublish(ctx context.Context, proc *ffpipe.Proc) error {
	timeout := time.NewTimer(s.cfg.StartTimeout)
	defer timeout.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err() // the client is gone: it saw no acknowledgement
	case <-s.live:
		return nil
	case <-proc.Done():
		err := s.procFailure(proc)
		if ue := (*UpstreamError)(nil); errors.As(err, &ue) && ue.nameTaken() || isClosed(s.live) || isClosed(proc.Ready()) {
			return nil // the name is held by the stream's previous publisher: a wait
		}
		return err
	case <-timeout.C:
		s.log.Debugf("ffmpeg not publishing %s after the first write; the audio is held", s.cfg.StartTimeout)
		return nil
	case <-s.endReq:
		return nil // the end sends the log on
	}
}

// retract takes a refused first write back out of the log, and its bytes
// out of the scanner, if no write came after it (write n was the last to
// reach the scanner) and the stream never published; otherwise it stays, acknowledged,
// for the ffmpegs that follow. It reports whether it took it back.
func (s *Session) retract(mark int64, n uint64, res Result) bool {
	select {
	case s.wsem <- struct{}{}:
	case <-s.endReq:
		return false
	}
	defer func() { <-s.wsem }()
	s.mu.Lock()
	published := s.published
	s.mu.Unlock()
	if published || s.writes != n {
		return false
	}
	s.scan.rollback()
	s.slog.truncate(mark)
	s.syncBuffered()
	s.mu.Lock()
	s.bytes -= res.Bytes
	s.audio -= res.Audio
	s.mu.Unlock()
	return true
}

// procFailure waits briefly for a failing ffmpeg's exit and returns why it
// failed, as ffmpeg said it.
func (s *Session) procFailure(proc *ffpipe.Proc) error {
	reason := "ffmpeg exited"
	if err := proc.Err(); err != nil {
		reason = trimFFmpeg(err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.killed == proc {
		reason = s.killedWhy
	}
	err := &UpstreamError{Reason: reason}
	s.err = err
	return err
}
