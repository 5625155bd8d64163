package session

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"syscall"
	"time"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/redact"

	"github.com/sirupsen/logrus"
)

// Restart backoff: quick first retries (an RTMP server restarting is back
// within seconds), capped so that a stream republishes within 2 s of its
// server's return, with jitter so that many sessions do not retry in step.
const (
	backoffFirst = 250 * time.Millisecond
	backoffMax   = 2 * time.Second
	// healthyAfter: an ffmpeg that ran this long resets the backoff.
	healthyAfter = 30 * time.Second
)

func backoff(failures int) time.Duration {
	d := backoffFirst << min(max(failures, 1)-1, 10)
	d = min(d, backoffMax)
	return d - time.Duration(rand.Int64N(int64(d/5)+1)) // 80-100%: never beyond the cap
}

// startAttempt starts an ffmpeg that reads the log from where the last one
// left off, and its watcher. Must hold wsem.
func (s *Session) startAttempt() error {
	start := s.slog.resumeAt()
	fc := s.cfg.FFmpeg
	s.mu.Lock()
	if s.outputs == nil {
		s.outputs = s.cfg.OutputsFor(s.id)
	}
	fc.Target, fc.Also = s.outputs[0], s.outputs[1:]
	fc.Record = s.recordFile(time.Now())
	s.mu.Unlock()
	if fc.Record != "" {
		a := createRecording(fc.Record)
		s.mu.Lock()
		s.archive = a
		s.mu.Unlock()
	}
	fc.CatchUp = s.slog.pendAudio + upstreamRewind // what it replays at once
	fc.LiveID = s.cfg.redactID(s.id)
	if in := s.scan.input(); in != "" {
		fc.InputFormat = in // MP3 goes in FLV tags: see flvFramer
	}
	if c, ok := s.scan.(interface{ alwaysCopy() bool }); ok && c.alwaysCopy() {
		fc.AudioCodec = "copy" // see aacUnits
	} else if fc.AudioCodec == "copy" && !s.flvCarries(start) {
		fc.AudioCodec = "aac"
	}
	proc, err := ffpipe.Start(s.ctx, fc, s.log)
	if err != nil {
		s.log.WithError(err).Error("cannot start ffmpeg")
		return &UpstreamError{Reason: err.Error()}
	}
	s.cur = newAttempt(proc, &s.slog, start, s.scan.framer())
	s.cfg.Observer.FFmpegStarted()
	s.mu.Lock()
	first := s.pid == 0
	if s.state == StateNew {
		s.state = StateLive
	}
	s.pid = proc.Pid()
	s.running = proc
	s.restreams = nil // connecting until looked at
	s.stoppedOutside = false
	s.liveAt = time.Time{}
	s.ffstate = "starting"
	s.mu.Unlock()
	if first {
		l := s.log.WithFields(logrus.Fields{"pid": proc.Pid(), "target": redact.URL(fc.Target, fc.LiveID)})
		for i, u := range fc.Also {
			l = l.WithField("output"+strconv.Itoa(i+1), redact.URL(u, fc.LiveID))
		}
		l.Info("session started")
	} else {
		s.cfg.Observer.FFmpegRestarted()
		if replay := s.slog.confirmed - start; s.slog.confirmed < s.slog.end() {
			s.log.WithFields(logrus.Fields{"pid": proc.Pid(), "preroll_units": replay,
				"held_seconds": fmt.Sprintf("%.2f", s.slog.pendAudio.Seconds())}).Info("ffmpeg started; it sends the audio no ffmpeg has sent yet")
		}
	}
	go s.watch(proc)
	return nil
}

// flvCarries tells whether the output can carry the audio at pos as it is
// (FLV says only 44.1, 22.05 or 11.025 kHz for MP3). Other audio (16 kHz
// from a mini-program, Opus) is encoded to AAC even with -audio-codec copy,
// or ffmpeg would refuse the output. Must hold wsem.
func (s *Session) flvCarries(pos int64) bool {
	if pos >= s.slog.end() {
		return false
	}
	if s.scan.copyable(*s.slog.at(pos)) {
		return true
	}
	if !s.warnedCopy {
		s.warnedCopy = true
		s.log.Warn("the output cannot carry this stream as it is: it is encoded to AAC despite -audio-codec copy")
	}
	return false
}

// watch follows one ffmpeg to its end. If it was the session's current one
// and the session is not ending, it confirms what it sent and schedules the
// next.
func (s *Session) watch(proc *ffpipe.Proc) {
	startedAt := time.Now()
	select {
	case <-proc.Ready():
	case <-proc.Done():
	}
	if isClosed(proc.Ready()) { // both may be closed by now: Ready always comes first
		s.mu.Lock()
		s.published = true
		if s.running == proc {
			s.ffstate = "publishing"
			s.liveAt = time.Now()
		}
		s.mu.Unlock()
		s.liveOnce.Do(func() { close(s.live) })
	}
	<-proc.Done()
	err := proc.Err()
	s.cfg.Observer.FFmpegExited(ffpipe.ExitCause(err))
	s.noteExit(proc, err) // see outside.go
	select {
	case s.wsem <- struct{}{}:
	case <-s.endReq:
		return // run's finish reaps it and sends the rest
	}
	defer func() { <-s.wsem }()
	a := s.cur
	if a == nil || a.proc != proc {
		return // replaced on purpose (a format change)
	}
	s.slog.confirm(a.progress(&s.slog, proc.Progress().OutTime))
	s.mu.Lock()
	onPurpose := s.killed == proc
	s.mu.Unlock()
	if isClosed(proc.Ready()) && (onPurpose || upstreamFailure(err)) {
		s.slog.rewind(upstreamRewind, a.start)
	}
	s.syncBuffered()
	s.cur = nil
	if s.endIfStoppedOutside() {
		return // the end gives up what it holds: no restart
	}
	s.mu.Lock()
	if s.running == proc {
		s.running = nil
	}
	reason := "ffmpeg exited"
	if err != nil {
		reason = trimFFmpeg(err.Error())
	}
	if s.killed == proc {
		reason = s.killedWhy
	}
	s.err = &UpstreamError{Reason: reason}
	if time.Since(startedAt) >= healthyAfter {
		s.failures = 0
	}
	s.failures++
	delay := backoff(s.failures)
	published := s.published
	s.ffstate = "restarting"
	s.mu.Unlock()
	l := s.log.WithFields(logrus.Fields{"pid": proc.Pid(), "ffmpeg_tail": strings.Join(proc.Tail(), " | "),
		"sent_seconds": fmt.Sprintf("%.2f", a.sentAt.Seconds()), "output_seconds": fmt.Sprintf("%.2f", proc.Progress().OutTime.Seconds()),
		"units_given": a.cursor - a.start, "units_sent": a.sent - a.start})
	if !published && !s.unsent() {
		// Its first write was answered with the error and taken back:
		// the client's next write starts the next ffmpeg.
		l.Warn("ffmpeg failed before publishing: " + reason)
		return
	}
	l.WithField("retry_in", delay.Round(time.Millisecond).String()).Warn("ffmpeg ended unexpectedly: " + reason)
	s.retrying = true
	go s.restartAfter(delay)
}

// restartAfter starts the next ffmpeg after delay.
func (s *Session) restartAfter(delay time.Duration) {
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.endReq:
		return
	}
	select {
	case s.wsem <- struct{}{}:
	case <-s.endReq:
		return
	}
	defer func() { <-s.wsem }()
	if s.ending() || s.cur != nil || s.endIfStoppedOutside() {
		return
	}
	s.retrying = false
	s.mu.Lock()
	published := s.published
	s.mu.Unlock()
	if !published && !s.unsent() {
		return // nothing to publish: the next write starts one
	}
	s.mu.Lock()
	s.restarts++
	s.mu.Unlock()
	if err := s.startAttempt(); err != nil {
		s.mu.Lock()
		s.failures++
		next := backoff(s.failures)
		s.mu.Unlock()
		s.retrying = true
		go s.restartAfter(next)
		return
	}
	s.pump()
}

// upstreamRewind is how much of what a publishing ffmpeg reported sent is
// sent again when its connection failed or was cut for a stall: the RTMP
// server's buffers and TCP's lose it (measured with nginx-rtmp stopped
// mid-stream: 0.4-1.3 s). Twice published beats lost.
const upstreamRewind = 1500 * time.Millisecond

// upstreamFailure tells an ffmpeg that exited with an error of its own
// (its output failed) from one killed by a signal, which sends what it had
// queued before the connection closes.
func upstreamFailure(err error) bool {
	var ee *ffpipe.ExitError
	if !errors.As(err, &ee) || ee.State == nil {
		return false
	}
	ws, ok := ee.State.Sys().(syscall.WaitStatus)
	return ok && ws.Exited() && ws.ExitStatus() != 0 && ws.ExitStatus() != 255
}

// killOnPurpose kills a stuck ffmpeg; its watcher restarts it and reports
// why.
func (s *Session) killOnPurpose(p *ffpipe.Proc, why string) {
	s.mu.Lock()
	s.killed, s.killedWhy = p, why
	s.err = &UpstreamError{Reason: why}
	s.mu.Unlock()
	p.Kill()
}

func trimFFmpeg(s string) string { return strings.TrimPrefix(s, "ffmpeg ") }
