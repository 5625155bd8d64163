// Package session maps live IDs to sessions. A session owns the ffmpeg
// (package ffpipe) that publishes the ID's stream; every transport hands it
// bytes through the Registry.
//
// Delivery: a session keeps one ordered log of the audio it accepted, cut
// into whole units (see streamlog.go). A write is decided before anything
// changes (format, end, upstream failure, buffer), then appended: that is
// what an acknowledgement means. Each ffmpeg is an attempt that reads the
// log from a position; its progress reports confirm what it sent, and when
// it dies the next one starts at the first unconfirmed unit, after the
// segment's init data and the units its decoder needs first (pre-roll).
// Audio is given up only when the RTMP server stays away longer than the
// buffer (writes are refused meanwhile), when shutdown's grace runs out, or
// when a stream that never published ends; each is counted and logged once.
//
// A session's life:
//
//		new ──first audio──> live ──end requested──> ending ──log sent or given up──> ended
//		 │                                              ^
//		 └────────── refused first chunk, idle ─────────┘
//
//	  - new: created by the first data for an ID; no ffmpeg yet.
//	  - live: an attempt started with the first audio; attempts follow one
//	    another (failures, format changes) until the end.
//	  - ending: an end was requested (idle timeout, explicit end, shutdown,
//	    an operator). The session has left the registry, so new data for the
//	    ID starts a new session; writers still queued get errEnded and retry
//	    there. The log is sent on: stdin closed after the last unit, more
//	    attempts within endFlush if one fails.
//	  - ended: every ffmpeg reaped; Done is closed.
//
// Only run moves a session from live to ending to ended, so the transitions
// cannot happen twice; requestEnd only records why.
package session

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"ffmpeg-publisher/ffpipe"

	"github.com/sirupsen/logrus"
)

// Session is one live ID's stream. Its methods are called by the Registry.
type Session struct {
	id       string
	cfg      Config
	log      *logrus.Entry
	started  time.Time
	draining *atomic.Bool // the registry is draining (see Registry.Drain)

	// wsem is the writer lock. A channel so waiters can give up, and
	// because blocked senders queue in order.
	wsem chan struct{}
	// Owned by the holder of wsem:
	scan     format
	slog     streamLog
	cur      *attempt // the ffmpeg reading the log; nil while none runs
	retrying bool     // a restart is scheduled
	writes   uint64   // writes that reached the scanner, for retract
	clock    mediaClock
	// warnedCopy: the copy fallback to AAC was logged.
	warnedCopy bool
	// early: the ffmpeg prestarted before any audio, until it gets some
	// (see prestart.go); earlyAt: when.
	early   *ffpipe.Proc
	earlyAt time.Time
	// waiting: early, under mu, for admission control (see Loads);
	// waitingCount: the registry's count of such sessions (see Prestart)
	waiting      *ffpipe.Proc
	waitingCount *atomic.Int32

	endReq    chan struct{} // closed by requestEnd
	removed   chan struct{} // closed once the registry no longer gives it out
	live      chan struct{} // closed when an ffmpeg of the session first publishes
	done      chan struct{} // closed when ended
	abort     chan struct{} // closed by kill: no more tries to deliver the log
	abortOnce sync.Once
	// ctx ends with abort: a start waiting for its slot gives up.
	ctx      context.Context
	cancel   context.CancelFunc
	liveOnce sync.Once

	mu        sync.Mutex // guards the fields below
	state     State
	pid       int
	ffstate   string
	lastData  time.Time // last client write (idle timeout)
	lastWrite time.Time // last client audio into stdin (stall detection)
	inflight  int
	bytes     int64
	audio     time.Duration
	endReason string
	endCause  Cause
	source    Source         // the latest writer
	err       *UpstreamError // the latest ffmpeg failure
	published bool           // an ffmpeg of this session has opened its output
	liveAt    time.Time      // when the running ffmpeg opened its output
	restarts  int
	failures  int          // consecutive failures, for the backoff
	running   *ffpipe.Proc // the current attempt's, readable without wsem (kill, stall checks)
	dropped   int64        // accepted bytes that could not be delivered
	buffered  int          // unconfirmed bytes in the log
	killed    *ffpipe.Proc // the ffmpeg we killed on purpose (stuck or stalled)
	killedWhy string
	silence   time.Duration // fed by gap fill
	held      time.Duration // unconfirmed audio in the log
	seq       seqState
	upstream  string // upstreamStalled while the RTMP server does not read
	// stoppedOutside: the last ffmpeg to exit was stopped by a signal
	// from outside, and none was started since (see outside.go).
	stoppedOutside bool
	outputs        []string     // primary first, fixed at the first ffmpeg (see outputs.go)
	restreams      []OutputInfo // each output's state as checkOutputs last saw it (restreams.go)
	archive        archiveState // the current -record-dir file (archive.go)
	revoked        error        // why the application revoked the stream (Stream.Revoke)
}

func newSession(id string, cfg Config, log *logrus.Entry, draining *atomic.Bool) *Session {
	s := &Session{
		draining: draining,
		id:       id,
		cfg:      cfg,
		log:      log.WithField("id", id),
		started:  time.Now(),
		wsem:     make(chan struct{}, 1),
		endReq:   make(chan struct{}),
		removed:  make(chan struct{}),
		live:     make(chan struct{}),
		done:     make(chan struct{}),
		abort:    make(chan struct{}),
		state:    StateNew,
		ffstate:  "not started",
		lastData: time.Now(),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.slog.keep = upstreamRewind
	s.scan = newFormat(cfg.FFmpeg)
	if a, ok := s.scan.(*aacUnits); ok {
		a.silent = cfg.aacSilence
	}
	s.slog.preroll = s.scan.preroll()
	return s
}

// Done is closed when the session has ended and its ffmpeg is reaped.
func (s *Session) Done() <-chan struct{} { return s.done }

// Info returns a snapshot.
func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.infoLocked()
}

func (s *Session) infoLocked() Info {
	info := Info{
		ID: s.id, State: s.state, Started: s.started, Bytes: s.bytes,
		Audio: s.audio, Seconds: s.audio.Seconds(), PID: s.pid,
		FFmpeg: s.ffstate, EndReason: s.endReason, Cause: s.endCause,
		Transport: s.source.Transport, Remote: s.source.Remote,
		Upstream: s.upstream,
		Restarts: s.restarts, Dropped: s.dropped, Silence: s.silence.Seconds(), Buffered: s.buffered,
		Held: s.held.Seconds(), Sent: max(0, s.audio+s.silence-s.held).Seconds(), Format: s.cfg.FFmpeg.InputFormat,
	}
	if s.running != nil && s.state == StateLive {
		info.Output = s.running.Progress().OutTime.Seconds()
	}
	if s.err != nil {
		info.LastError = s.err.Error()
	}
	info.Outputs = s.outputStatesLocked()
	info.Recording = s.archive.info
	if s.source.Stats != nil {
		info.WebRTC = s.source.Stats()
	}
	return info
}

// Cause is why a session ended, in a word (a metric label).
type Cause string

const (
	CauseIdle     Cause = "idle"          // no data for the idle timeout
	CauseClient   Cause = "client"        // the client ended the stream
	CauseDeleted  Cause = "deleted"       // DELETE /streams/{id}
	CauseFFmpeg   Cause = "ffmpeg_failed" // ffmpeg could not be started at all
	CauseNotMP3   Cause = "not_mp3"       // the first data was refused
	CauseShutdown Cause = "shutdown"      // the server is stopping
)

// requestEnd asks run to end the session; the first reason wins.
func (s *Session) requestEnd(cause Cause, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endReason != "" {
		return
	}
	s.endCause = cause
	s.endReason = reason
	close(s.endReq)
}

func (s *Session) ending() bool { return isClosed(s.endReq) }

// Err is why the stream cannot go live: its ffmpeg failed and no ffmpeg of
// the session has published yet. Once a stream was live, failures are
// restarts, not errors (see Info's LastError).
// awaitRemoved waits until the registry no longer gives s out: a session
// asked to end is still there for a moment, and acquire would hand it out
// again instead of its successor.
func (s *Session) awaitRemoved(ctx context.Context) error {
	select {
	case <-s.removed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.errLocked(); err != nil {
		return err
	}
	return nil // not a nil *UpstreamError in a non-nil interface
}

func (s *Session) errLocked() *UpstreamError {
	if s.err == nil || s.published || s.err.nameTaken() {
		return nil // a name still held by the previous publisher is a wait
	}
	return s.err
}

// checkEvery is how often run checks for a stall or a drained stream:
// well within the stall timeout and drainIdle. The checks of all sessions
// fall on one grid of the registry's wheel, so they share a wakeup.
const checkEvery = time.Second

// run waits for a reason to end, then ends the session. remove takes the
// session out of the registry. Call once.
func (s *Session) run(remove func()) {
	wake := s.cfg.wheel.NewTimer()
	defer wake.Stop()
	nextCheck := s.cfg.wheel.Grid(time.Now(), checkEvery)
	wake.Reset(minTime(nextCheck, s.checkIdle(time.Now())))
	var st stallWatch
	var ow outputWatch
	for ended := false; !ended; {
		select {
		case <-s.endReq:
			ended = true
		case <-wake.C:
			now := time.Now()
			if !now.Before(nextCheck) {
				s.checkStall(&st, now)
				s.checkOutputs(&ow, now)
				s.checkDrained(now)
				s.tryObserveProgress()
				s.checkPrestart(now)
				nextCheck = s.cfg.wheel.Grid(now, checkEvery)
			}
			wake.Reset(minTime(nextCheck, s.checkIdle(now), s.fillGap(now)))
		}
	}
	s.mu.Lock()
	s.state = StateEnding
	s.mu.Unlock()
	remove()
	close(s.removed)

	s.wsem <- struct{}{} // wait for the writer in progress, keep others out
	s.finish()
	s.clearWaiting()
	s.mu.Lock()
	s.state = StateEnded
	if s.ffstate != "not started" {
		s.ffstate = "exited"
	}
	s.running = nil
	info := s.infoLocked()
	s.mu.Unlock()
	l := s.log.WithFields(logrus.Fields{
		"reason": info.EndReason, "bytes": info.Bytes,
		"audio_seconds": fmt.Sprintf("%.2f", info.Seconds),
		"duration":      time.Since(s.started).Round(time.Millisecond).String(),
	})
	if info.Restarts > 0 || info.Dropped > 0 || info.Silence > 0 {
		l = l.WithFields(logrus.Fields{"restarts": info.Restarts, "dropped_bytes": info.Dropped,
			"silence_seconds": fmt.Sprintf("%.2f", info.Silence)})
	}
	l.Info("session ended")
	s.cancel()
	close(s.done)
}

// drainIdle: while the server drains, a stream that got no data for this
// long has been moved elsewhere by the load balancer (its client sends
// every second or faster), so it ends now and frees its RTMP name for the
// server that took over.
const drainIdle = 1500 * time.Millisecond

func (s *Session) checkDrained(now time.Time) {
	if !s.draining.Load() {
		return
	}
	s.mu.Lock()
	quiet := s.inflight == 0 && now.Sub(s.lastData) > drainIdle
	s.mu.Unlock()
	if quiet {
		s.requestEnd(CauseShutdown, "drained: the stream moved to another server")
	}
}

// abortNow stops every try to deliver the log.
func (s *Session) abortNow() { s.abortOnce.Do(func() { close(s.abort); s.cancel() }) }

// aborted tells whether kill cut the end short.
func (s *Session) aborted() bool { return isClosed(s.abort) }

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// kill ends the session at once: shutdown's grace ran out. run still
// reaps ffmpeg.
func (s *Session) kill() {
	s.requestEnd(CauseShutdown, "shutdown")
	s.abortNow()
	s.mu.Lock()
	p := s.running
	s.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}
