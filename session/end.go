package session

import (
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
)

// How a session ends: the rest of its log sent, or given up and counted.

// endFlush bounds how long an ending session keeps starting ffmpegs to send
// the part of its log none has sent (it ended while its ffmpeg was
// restarting, or waiting for its RTMP name); beyond it that audio is given
// up and counted.
const endFlush = 10 * time.Second

// finish sends the rest of the log and ends the last ffmpeg. A stream that
// never went live and was told why (Err) is not retried: its client was
// told, and a publish behind its back would surprise. Must hold wsem.
func (s *Session) finish() {
	if s.awaitingAudio() {
		s.cur.proc.Discard() // started before any audio, and none came
		defer s.removeEmptyRecording()
	}
	if units := s.scan.flush(); len(units) > 0 {
		for _, u := range units {
			s.slog.append(u)
		}
		s.countAccepted(0, unitsAudio(units), "")
	}
	deadline := time.Now().Add(endFlush)
	retry := s.Err() == nil
	for failures := 0; ; {
		if s.cur == nil && retry && s.unsent() && !s.aborted() {
			if failures > 0 {
				wait := backoff(failures)
				if time.Until(deadline) < wait {
					break
				}
				select {
				case <-time.After(wait):
				case <-s.abort:
				}
			}
			if !s.aborted() && !s.endIfStoppedOutside() {
				if failures > 0 {
					s.mu.Lock()
					s.restarts++
					s.mu.Unlock()
				}
				s.startAttempt()
			}
		}
		clean := false
		if s.cur != nil {
			s.pump() // through every segment boundary
			if s.cur != nil {
				clean = s.closeAttempt(deadline)
			}
		}
		if !s.unsent() || s.aborted() || !retry || time.Now().After(deadline) {
			break
		}
		if clean {
			continue // a segment sent: the next one starts at once
		}
		if failures++; failures == 1 {
			s.log.WithField("held_seconds", fmt.Sprintf("%.2f", s.slog.pendAudio.Seconds())).
				Info("the stream ended with audio no ffmpeg has sent yet; publishing it before the end")
		}
	}
	s.giveUp()
}

// unsent tells whether the log holds audio no ffmpeg has sent. Must hold
// wsem.
func (s *Session) unsent() bool { return s.slog.confirmed < s.slog.end() }

// closeAttempt closes the current ffmpeg's input after the last unit and
// waits for it to send and exit; an exit of its own confirms all it was
// given, and it reports that. One still starting gets its flush grace from
// its publish, not from now. Must hold wsem.
func (s *Session) closeAttempt(deadline time.Time) bool {
	a := s.cur
	s.cur = nil
	if !isClosed(a.proc.Ready()) {
		a.proc.CloseInput()
		select {
		case <-a.proc.Ready():
		case <-a.proc.Done():
		case <-time.After(max(time.Until(deadline), s.cfg.StartTimeout)):
		case <-s.abort:
		}
	}
	clean := a.proc.Stop(s.cfg.FlushGrace) == nil && !a.proc.Interrupted()
	if clean {
		s.slog.confirm(a.cursor)
	} else {
		s.slog.confirm(a.progress(&s.slog, a.proc.Progress().OutTime))
	}
	s.syncBuffered()
	return clean
}

// giveUp drops what no ffmpeg sent, once, counted and logged. Must hold
// wsem.
func (s *Session) giveUp() {
	bytes, audio := s.slog.dropUnconfirmed()
	s.syncBuffered()
	if bytes == 0 {
		return
	}
	s.mu.Lock()
	s.dropped += int64(bytes)
	cause := DropUpstream
	switch {
	case s.aborted():
		cause = DropShutdown
	case !s.published:
		cause = DropNeverPublished
	}
	s.mu.Unlock()
	s.cfg.Observer.Dropped(cause, bytes)
	s.log.WithFields(logrus.Fields{"dropped_bytes": bytes, "dropped_seconds": fmt.Sprintf("%.2f", audio.Seconds()), "cause": cause}).
		Warn("the stream ended with audio that no ffmpeg could send")
}

// Why accepted audio was given up: the only three ways (a metric label).
const (
	DropUpstream       = "upstream"        // the RTMP server stayed away through the end's retries
	DropShutdown       = "shutdown"        // shutdown's grace ran out
	DropNeverPublished = "never_published" // the stream ended without ever publishing
)
