// Package session maps live IDs to sessions. A session owns one ffmpeg
// (package ffpipe) that publishes the ID's stream; every transport hands it
// bytes through the Registry, and the session writes them to ffmpeg's stdin
// one writer at a time, in arrival order.
//
// A session's life:
//
//		new ──first audio──> live ──end requested──> ending ──ffmpeg reaped──> ended
//		 │                                              ^
//		 └────────── refused first chunk, idle ─────────┘
//
//	  - new: created by the first data for an ID; no ffmpeg yet.
//	  - live: ffmpeg started with the first audio frame.
//	  - ending: an end was requested (idle timeout, explicit end, ffmpeg
//	    exited, a write timed out, shutdown). The session has left the
//	    registry, so new data for the ID starts a new session; writers still
//	    queued get errEnded and retry there.
//	  - ended: stdin closed, ffmpeg flushed and was reaped (or killed after a
//	    grace); Done is closed.
//
// Only run moves a session from live to ending to ended, so the transitions
// cannot happen twice; requestEnd only records why.
package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"ffmpeg-publisher/ffpipe"

	"github.com/sirupsen/logrus"
)

// Errors a transport maps to replies.
var (
	ErrInvalidID    = errors.New("invalid live id: use 1 to 64 characters from A-Z a-z 0-9 _ -")
	ErrAtCapacity   = errors.New("too many live sessions on this server, try again later")
	ErrShuttingDown = errors.New("the server is shutting down")
	ErrBusy         = errors.New("this live id already has a publisher connected")
	ErrNotMP3       = errors.New("data is not MP3: no MPEG audio layer III frame found")
	// errEnded: the session ended while the caller waited; retry on a new one.
	errEnded = errors.New("session ended")
)

// UpstreamError means ffmpeg or the RTMP server behind it failed; Reason is
// what ffmpeg said, which the client needs to fix its setup.
type UpstreamError struct{ Reason string }

func (e *UpstreamError) Error() string { return "ffmpeg failed: " + e.Reason }

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID tells whether id is an acceptable live ID. IDs become part of an
// RTMP URL, so nothing that could change its meaning gets through.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Target returns the output URL for id: base with "{id}" replaced, or
// base + "/" + id.
func Target(base, id string) string {
	if strings.Contains(base, "{id}") {
		return strings.ReplaceAll(base, "{id}", id)
	}
	return strings.TrimRight(base, "/") + "/" + id
}

// Defaults for the zero values of Config.
const (
	DefaultIdleTimeout = 30 * time.Second
	// DefaultStartTimeout bounds how long the first write of a session
	// waits for ffmpeg to open its output, so a dead RTMP server is
	// reported on that write; measured start is ~0.3 s.
	DefaultStartTimeout = 5 * time.Second
	// DefaultWriteTimeout: an ffmpeg that takes no input for this long is
	// stuck (a pipe holds 64 KiB, several seconds of audio).
	DefaultWriteTimeout = 10 * time.Second
)

// Config is the part of the server's configuration sessions use.
type Config struct {
	// FFmpeg is the template for every ffmpeg; Target is set per ID.
	FFmpeg ffpipe.Config
	// RTMPBase is the RTMP URL that Target builds on.
	RTMPBase string
	// IdleTimeout ends a session without data; 0 means 30s.
	IdleTimeout time.Duration
	// MaxSessions caps live sessions; 0 means no cap.
	MaxSessions int
	// StartTimeout: see DefaultStartTimeout; 0 means 5s.
	StartTimeout time.Duration
	// WriteTimeout: see DefaultWriteTimeout; 0 means 10s.
	WriteTimeout time.Duration
	// FlushGrace is how long ffmpeg gets to exit after stdin closes
	// before it is interrupted and killed; 0 means ffpipe's default.
	FlushGrace time.Duration
	// Observer is told what happens, for metrics; nil means nobody.
	Observer Observer
}

// Observer receives events from sessions. Calls come from many goroutines
// and must not block.
type Observer interface {
	SessionStarted()
	SessionEnded(cause Cause)
	FFmpegStarted()
	FFmpegExited(cause string) // ffpipe.ExitCause
	Accepted(transport string, bytes int, audio time.Duration)
	StdinWritten(took time.Duration)
}

type nopObserver struct{}

func (nopObserver) SessionStarted()                     {}
func (nopObserver) SessionEnded(Cause)                  {}
func (nopObserver) FFmpegStarted()                      {}
func (nopObserver) FFmpegExited(string)                 {}
func (nopObserver) Accepted(string, int, time.Duration) {}
func (nopObserver) StdinWritten(time.Duration)          {}

func (c Config) withDefaults() Config {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.FFmpeg.InputFormat == "" {
		c.FFmpeg.InputFormat = "mp3"
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// State is where a session is in its life.
type State string

const (
	StateNew    State = "new"
	StateLive   State = "live"
	StateEnding State = "ending"
	StateEnded  State = "ended"
)

// Info is a snapshot of a session for replies, status messages and logs.
type Info struct {
	ID        string        `json:"id"`
	State     State         `json:"state"`
	Started   time.Time     `json:"started"`
	Bytes     int64         `json:"bytes"`
	Audio     time.Duration `json:"-"`
	Seconds   float64       `json:"seconds"`
	PID       int           `json:"pid,omitempty"`
	FFmpeg    string        `json:"ffmpeg"`              // not started, starting, publishing, exited
	Publisher string        `json:"publisher,omitempty"` // transport of the connection holding the ID
	Transport string        `json:"transport,omitempty"` // of the latest write
	Remote    string        `json:"remote,omitempty"`    // of the latest write
	LastError string        `json:"last_error,omitempty"`
	EndReason string        `json:"end_reason,omitempty"`
	Cause     Cause         `json:"-"`
}

// Result tells what one write accepted.
type Result struct {
	Bytes int64         // input bytes accepted
	Audio time.Duration // audio they completed
	Total Info          // the session after the write
}

// Session is one live ID's stream. Its methods are called by the Registry.
type Session struct {
	id      string
	cfg     Config
	log     *logrus.Entry
	started time.Time

	// wsem is the writer lock: one writer to stdin at a time. A channel
	// so waiters can give up, and because blocked senders queue in order.
	wsem chan struct{}
	// Owned by the holder of wsem:
	scan *mp3Scanner // nil for formats other than MP3
	proc *ffpipe.Proc

	endReq chan struct{} // closed by requestEnd
	done   chan struct{} // closed when ended

	mu        sync.Mutex // guards the fields below
	state     State
	pid       int
	ffstate   string
	lastData  time.Time
	inflight  int
	bytes     int64
	audio     time.Duration
	endReason string
	endCause  Cause
	source    Source         // the latest writer
	err       *UpstreamError // why the session failed, if it did
	running   *ffpipe.Proc   // proc, for kill, which does not hold wsem
}

func newSession(id string, cfg Config, log *logrus.Entry) *Session {
	s := &Session{
		id:       id,
		cfg:      cfg,
		log:      log.WithField("id", id),
		started:  time.Now(),
		wsem:     make(chan struct{}, 1),
		endReq:   make(chan struct{}),
		done:     make(chan struct{}),
		state:    StateNew,
		ffstate:  "not started",
		lastData: time.Now(),
	}
	if cfg.FFmpeg.InputFormat == "mp3" {
		s.scan = &mp3Scanner{}
	}
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
	return Info{
		ID: s.id, State: s.state, Started: s.started, Bytes: s.bytes,
		Audio: s.audio, Seconds: s.audio.Seconds(), PID: s.pid,
		FFmpeg: s.ffstate, EndReason: s.endReason, Cause: s.endCause,
		Transport: s.source.Transport, Remote: s.source.Remote,
		LastError: s.lastError(),
	}
}

// lastError is the failure's text, if any. Must hold mu.
func (s *Session) lastError() string {
	if s.err == nil {
		return ""
	}
	return s.err.Error()
}

// Cause is why a session ended, in a word (a metric label).
type Cause string

const (
	CauseIdle     Cause = "idle"          // no data for the idle timeout
	CauseClient   Cause = "client"        // the client ended the stream
	CauseDeleted  Cause = "deleted"       // DELETE /streams/{id}
	CauseFFmpeg   Cause = "ffmpeg_failed" // ffmpeg or the RTMP server failed
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

// fail ends the session because its ffmpeg failed; Err reports err.
func (s *Session) fail(err *UpstreamError) {
	s.mu.Lock()
	if s.err == nil && s.endReason == "" {
		s.err = err
	}
	s.mu.Unlock()
	s.requestEnd(CauseFFmpeg, err.Error())
}

// Err is why the session failed, or nil if it did not (yet).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		return nil // not a typed nil
	}
	return s.err
}

// run waits for a reason to end, then ends the session. remove takes the
// session out of the registry. Call once.
func (s *Session) run(remove func()) {
	idle := time.NewTimer(s.cfg.IdleTimeout)
	defer idle.Stop()
	for ended := false; !ended; {
		select {
		case <-s.endReq:
			ended = true
		case <-idle.C:
			s.mu.Lock()
			wait := s.cfg.IdleTimeout - time.Since(s.lastData)
			if s.inflight > 0 {
				wait = s.cfg.IdleTimeout
			}
			s.mu.Unlock()
			if wait <= 0 {
				s.requestEnd(CauseIdle, fmt.Sprintf("idle for %s", s.cfg.IdleTimeout))
			} else {
				idle.Reset(wait)
			}
		}
	}
	s.mu.Lock()
	s.state = StateEnding
	s.mu.Unlock()
	remove()

	s.wsem <- struct{}{} // wait for the writer in progress, keep others out
	if s.proc != nil {
		s.stopProc()
	}
	s.mu.Lock()
	s.state = StateEnded
	info := s.infoLocked()
	s.mu.Unlock()
	s.log.WithFields(logrus.Fields{
		"reason": info.EndReason, "bytes": info.Bytes,
		"audio_seconds": fmt.Sprintf("%.2f", info.Seconds),
		"duration":      time.Since(s.started).Round(time.Millisecond).String(),
	}).Info("session ended")
	close(s.done)
}

// stopProc hands ffmpeg the last held frame, closes its stdin and waits for
// it. Must hold wsem.
func (s *Session) stopProc() {
	if s.scan != nil {
		if last := s.scan.flush(); len(last) > 0 {
			s.proc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			s.proc.Write(last)
		}
	}
	s.proc.Stop(s.cfg.FlushGrace)
	s.mu.Lock()
	s.ffstate = "exited"
	s.mu.Unlock()
}

// kill ends the session at once: shutdown's grace ran out. run still
// reaps ffmpeg.
func (s *Session) kill() {
	s.requestEnd(CauseShutdown, "shutdown")
	s.mu.Lock()
	p := s.running
	s.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// write hands p to ffmpeg. It waits for earlier writers (giving up when
// ctx ends), starts ffmpeg with the stream's first audio, and returns once
// the bytes are in ffmpeg's stdin. With awaitStart, the write that started
// ffmpeg then waits (without holding the writer lock) until ffmpeg has
// opened its output, so an unreachable RTMP server fails this request
// rather than a later one: one-shot POSTs want that, connections learn it
// from status messages instead.
func (s *Session) write(ctx context.Context, src Source, p []byte, awaitStart bool) (Result, error) {
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case <-s.endReq:
		return Result{}, errEnded
	}
	res, started, err := s.writeLocked(src, p)
	<-s.wsem
	if err == nil && started != nil && awaitStart {
		err = s.awaitPublish(started)
	}
	return res, err
}

// writeLocked does write's work. Must hold wsem. It returns the ffmpeg it
// started, if this write started one.
func (s *Session) writeLocked(src Source, p []byte) (Result, *ffpipe.Proc, error) {
	s.mu.Lock()
	if s.endReason != "" {
		s.mu.Unlock()
		return Result{}, nil, errEnded
	}
	s.source = src
	s.inflight++
	s.lastData = time.Now()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight--
		s.lastData = time.Now()
		s.mu.Unlock()
	}()

	data := p
	var audioBefore time.Duration
	if s.scan != nil {
		audioBefore = s.scan.stats.Audio
		var err error
		if data, err = s.scan.feed(p); err != nil {
			if s.proc == nil {
				s.requestEnd(CauseNotMP3, "first data was not MP3")
			}
			return Result{}, nil, err
		}
	}
	var started *ffpipe.Proc
	if s.proc == nil && len(data) > 0 {
		if err := s.startProc(); err != nil {
			return Result{}, nil, err
		}
		started = s.proc
	}
	if len(data) > 0 {
		if err := s.writeProc(data); err != nil {
			return Result{}, nil, err
		}
	}
	var audio time.Duration
	if s.scan != nil {
		audio = s.scan.stats.Audio - audioBefore
	}
	s.mu.Lock()
	s.bytes += int64(len(p))
	s.audio += audio
	info := s.infoLocked()
	s.mu.Unlock()
	s.cfg.Observer.Accepted(src.Transport, len(p), audio)
	return Result{Bytes: int64(len(p)), Audio: audio, Total: info}, started, nil
}

// startProc starts ffmpeg. Must hold wsem.
func (s *Session) startProc() error {
	fc := s.cfg.FFmpeg
	fc.Target = Target(s.cfg.RTMPBase, s.id)
	proc, err := ffpipe.Start(fc, s.log)
	if err != nil {
		s.log.WithError(err).Error("cannot start ffmpeg")
		s.requestEnd(CauseFFmpeg, "ffmpeg did not start")
		return &UpstreamError{Reason: err.Error()}
	}
	s.proc = proc
	s.cfg.Observer.FFmpegStarted()
	s.mu.Lock()
	s.state = StateLive
	s.pid = proc.Pid()
	s.running = proc
	s.ffstate = "starting"
	s.mu.Unlock()
	s.log.WithFields(logrus.Fields{"pid": proc.Pid(), "target": RedactURL(fc.Target)}).Info("session started")
	go func() {
		select {
		case <-proc.Ready():
			s.mu.Lock()
			if s.ffstate == "starting" {
				s.ffstate = "publishing"
			}
			s.mu.Unlock()
		case <-proc.Done():
		}
		<-proc.Done()
		s.mu.Lock()
		s.ffstate = "exited"
		s.mu.Unlock()
		s.cfg.Observer.FFmpegExited(ffpipe.ExitCause(proc.Err()))
		if err := proc.Err(); err != nil {
			s.fail(&UpstreamError{Reason: strings.TrimPrefix(err.Error(), "ffmpeg ")})
		} else {
			s.requestEnd(CauseFFmpeg, "ffmpeg exited")
		}
	}()
	return nil
}

// writeProc writes to stdin with a deadline. Must hold wsem.
func (s *Session) writeProc(data []byte) error {
	start := time.Now()
	s.proc.SetWriteDeadline(start.Add(s.cfg.WriteTimeout))
	_, err := s.proc.Write(data)
	if err == nil {
		s.cfg.Observer.StdinWritten(time.Since(start))
		return nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err := &UpstreamError{Reason: fmt.Sprintf("ffmpeg took no input for %s", s.cfg.WriteTimeout)}
		s.log.Warn(err.Reason)
		s.fail(err)
		return err
	}
	// The pipe broke: ffmpeg is exiting. Its exit status says why.
	select {
	case <-s.proc.Done():
	case <-time.After(s.cfg.StartTimeout):
	}
	return s.procFailure(s.proc)
}

// starveWait: ffmpeg reads about 1 KiB of MP3 before it opens its output;
// when it has read all it was given and still has not, it is waiting for
// more input, and a first chunk that small is acknowledged after this
// rather than after StartTimeout. Measured: from the last byte of a large
// enough chunk to ffmpeg's first report takes ~0.22 s on loopback.
const starveWait = 500 * time.Millisecond

// awaitPublish waits until proc has opened its output (published), failed,
// or is starved of input.
func (s *Session) awaitPublish(proc *ffpipe.Proc) error {
	timeout := time.NewTimer(s.cfg.StartTimeout)
	defer timeout.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	var drained time.Time
	for {
		select {
		case <-proc.Ready():
			return nil
		case <-proc.Done():
			return s.procFailure(proc)
		case <-timeout.C:
			s.log.Debugf("ffmpeg not publishing %s after the first write", s.cfg.StartTimeout)
			return nil
		case now := <-poll.C:
			if n, err := proc.Pending(); err != nil || n > 0 {
				drained = time.Time{}
			} else if drained.IsZero() {
				drained = now
			} else if now.Sub(drained) >= starveWait {
				return nil // ffmpeg waits for more input; the bytes are in
			}
		}
	}
}

func (s *Session) procFailure(proc *ffpipe.Proc) error {
	reason := "ffmpeg stopped reading its input"
	select {
	case <-proc.Done():
		if err := proc.Err(); err != nil {
			reason = strings.TrimPrefix(err.Error(), "ffmpeg ")
		} else {
			reason = "ffmpeg exited"
		}
	default:
	}
	err := &UpstreamError{Reason: reason}
	s.fail(err)
	return err
}

// RedactURL hides a query string (RTMP servers often take a key there).
func RedactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?REDACTED"
	}
	return u
}
