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
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/redact"

	"github.com/sirupsen/logrus"
)

// Errors a transport maps to replies.
var (
	ErrInvalidID    = errors.New("invalid live id: use 1 to 64 characters from A-Z a-z 0-9 _ -")
	ErrAtCapacity   = errors.New("too many live sessions on this server, try again later")
	ErrShuttingDown = errors.New("the server is shutting down")
	ErrBusy         = errors.New("this live id already has a publisher connected")
	ErrNotMP3       = errors.New("data is not MP3: no MPEG audio layer III frame found")
	ErrFormat       = errors.New("this live id is streaming another audio format")
	ErrBufferFull   = errors.New("the RTMP publish is restarting and this stream's buffer is full, retry shortly")
	// errEnded: the session ended while the caller waited; retry on a new one.
	errEnded = errors.New("session ended")
)

// UpstreamError means ffmpeg or the RTMP server behind it failed; Reason is
// what ffmpeg said, which the client needs to fix its setup.
type UpstreamError struct{ Reason string }

func (e *UpstreamError) Error() string { return "ffmpeg failed: " + e.Reason }

// nameTaken tells a refusal because the stream name is being published
// by someone else (nginx-rtmp: "Already publishing"), which passes.
func (e *UpstreamError) nameTaken() bool { return strings.Contains(e.Reason, "Already publishing") }

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
	// DefaultStallTimeout: ffmpeg reports progress every 0.5 s while it
	// has input; 5 s without output progress is a hung upstream, not
	// jitter.
	DefaultStallTimeout = 5 * time.Second
	// DefaultBufferAudio: what an RTMP server restart costs at most.
	DefaultBufferAudio = 10 * time.Second
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
	// StallTimeout restarts an ffmpeg whose output stops advancing while
	// input arrives (a hung RTMP server); 0 means 5s.
	StallTimeout time.Duration
	// GapFill feeds silence after this long without client audio so the
	// publish stays alive; 0 turns it off.
	GapFill time.Duration
	// BufferBytes and BufferAudio bound the audio held while ffmpeg is
	// restarting: beyond either, writes get ErrBufferFull. 0 means no bound
	// of that kind; both 0 means 10s of audio.
	BufferBytes int
	BufferAudio time.Duration
	// SeqWait is how long a numbered chunk waits for a missing
	// predecessor; 0 means 2s.
	SeqWait time.Duration
}

// Observer receives events from sessions. Calls come from many goroutines
// and must not block.
type Observer interface {
	SessionStarted()
	SessionEnded(cause Cause)
	FFmpegStarted()
	FFmpegRestarted()
	Buffered(delta int)        // bytes held while ffmpeg is down: + held, - released or dropped
	FFmpegExited(cause string) // ffpipe.ExitCause
	Accepted(transport string, bytes int, audio time.Duration)
	StdinWritten(took time.Duration)
}

type nopObserver struct{}

func (nopObserver) SessionStarted()                     {}
func (nopObserver) SessionEnded(Cause)                  {}
func (nopObserver) FFmpegStarted()                      {}
func (nopObserver) FFmpegRestarted()                    {}
func (nopObserver) Buffered(int)                        {}
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
	if c.SeqWait <= 0 {
		c.SeqWait = DefaultSeqWait
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.BufferBytes <= 0 && c.BufferAudio <= 0 {
		c.BufferAudio = DefaultBufferAudio
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
	FFmpeg    string        `json:"ffmpeg"`              // not started, starting, publishing, restarting, exited
	Restarts  int           `json:"restarts"`            // ffmpeg restarts after failures
	Upstream  string        `json:"upstream,omitempty"`  // "not answering": the RTMP server stopped reading ffmpeg's connection
	Buffered  int           `json:"buffered_bytes"`      // held while ffmpeg restarts
	Dropped   int64         `json:"dropped_bytes"`       // accepted but never delivered (lost in a dead ffmpeg)
	Silence   float64       `json:"silence_seconds"`     // gap fill fed
	Output    float64       `json:"output_seconds"`      // sent on by the running ffmpeg (its progress, at most 0.5 s old)
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
	id       string
	cfg      Config
	log      *logrus.Entry
	started  time.Time
	draining *atomic.Bool // the registry is draining (see Registry.Drain)

	// wsem is the writer lock: one writer to stdin at a time. A channel
	// so waiters can give up, and because blocked senders queue in order.
	wsem chan struct{}
	// Owned by the holder of wsem:
	scan    *mp3Scanner  // nil for formats other than MP3
	proc    *ffpipe.Proc // the ffmpeg taking input; nil before the first audio and while restarting
	pending []byte       // whole frames accepted while proc is nil, written when it is back
	pendAud time.Duration
	// unsettled is the restarted ffmpeg that pending was written to,
	// until it publishes; meanwhile new audio goes to it and is held too.
	unsettled *ffpipe.Proc
	// firstProc: unsettled is the session's first ffmpeg. Its copy is
	// best effort: a burst beyond the buffer is written uncopied rather
	// than refused, as before there was anything to hold on to.
	firstProc bool
	// warnedCopy: the copy fallback to AAC was logged.
	warnedCopy bool
	// sent is the recent audio written to sentTo, for replayLost.
	sent      []sentChunk
	sentBuf   []byte
	sentAudio time.Duration
	sentTo    *ffpipe.Proc
	fed       time.Duration // audio handed on (client audio and silence): the media clock
	clock0    time.Time     // when the first audio was handed on
	silent    []byte        // one silent frame in the stream's format, for gap fill
	// flvTo is the ffmpeg writeProc last wrote to: flv frames MP3 for it
	// (it got the FLV header) and deadline is its stdin's write deadline.
	flv      flvFramer
	flvTo    *ffpipe.Proc
	deadline time.Time

	endReq    chan struct{} // closed by requestEnd
	done      chan struct{} // closed when ended
	abort     chan struct{} // closed by kill: no more tries to deliver held audio
	abortOnce sync.Once

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
	running   *ffpipe.Proc // proc, readable without wsem (kill, stall checks)
	dropped   int64        // accepted bytes that could not be delivered
	buffered  int          // len(pending)
	killed    *ffpipe.Proc // the ffmpeg we killed on purpose (stuck or stalled)
	killedWhy string
	silence   time.Duration // fed by gap fill
	seq       seqState
	upstream  string // upstreamStalled while the RTMP server does not read
	// stoppedOutside: the last ffmpeg to exit was stopped by a signal
	// from outside, and none was started since (see outside.go).
	stoppedOutside bool
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
		done:     make(chan struct{}),
		abort:    make(chan struct{}),
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
	info := Info{
		ID: s.id, State: s.state, Started: s.started, Bytes: s.bytes,
		Audio: s.audio, Seconds: s.audio.Seconds(), PID: s.pid,
		FFmpeg: s.ffstate, EndReason: s.endReason, Cause: s.endCause,
		Transport: s.source.Transport, Remote: s.source.Remote,
		Upstream: s.upstream,
		Restarts: s.restarts, Dropped: s.dropped, Silence: s.silence.Seconds(), Buffered: s.buffered,
	}
	if s.running != nil && s.state == StateLive {
		info.Output = s.running.Progress().OutTime.Seconds()
	}
	if s.err != nil {
		info.LastError = s.err.Error()
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

func (s *Session) ending() bool {
	select {
	case <-s.endReq:
		return true
	default:
		return false
	}
}

// Err is why the stream cannot go live: its ffmpeg failed and no ffmpeg of
// the session has published yet. Once a stream was live, failures are
// restarts, not errors (see Info's LastError).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil || s.published || s.err.nameTaken() {
		return nil // a name still held by the previous publisher is a wait
	}
	return s.err
}

// checkEvery is how often run checks for a stall or a drained stream:
// well within the stall timeout (5 s) and drainIdle (1.5 s). Between
// checks a session sleeps, unless gap fill falls due sooner: every
// wakeup of every session costs CPU (measured with 100 streams: ticks
// every 0.1 s took 0.6% of a core; the publisher used 3.7% in all).
const checkEvery = time.Second

// gapRetry: a gap fill found a client writing; look again this soon.
const gapRetry = 100 * time.Millisecond

// gapStep: silence goes to ffmpeg in pieces this long (at most half of
// GapFill), ahead of the moment each is due.
const gapStep = 250 * time.Millisecond

// run waits for a reason to end, then ends the session. remove takes the
// session out of the registry. Call once.
func (s *Session) run(remove func()) {
	idle := time.NewTimer(s.cfg.IdleTimeout)
	defer idle.Stop()
	wake := time.NewTimer(checkEvery)
	defer wake.Stop()
	nextCheck := time.Now().Add(checkEvery)
	var st stallWatch
	for ended := false; !ended; {
		select {
		case <-s.endReq:
			ended = true
		case now := <-wake.C:
			if !now.Before(nextCheck) {
				s.checkStall(&st, now)
				s.checkDrained(now)
				nextCheck = now.Add(checkEvery)
			}
			next := nextCheck
			if due := s.fillGap(now); !due.IsZero() && due.Before(next) {
				next = due
			}
			wake.Reset(max(time.Until(next), time.Millisecond))
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
	s.finish()
	s.mu.Lock()
	s.dropped += int64(len(s.pending))
	s.mu.Unlock()
	s.clearPending()
	s.mu.Lock()
	s.state = StateEnded
	if s.ffstate != "not started" {
		s.ffstate = "exited"
	}
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

// endFlush bounds how long an ending session keeps trying to deliver
// audio it acknowledged that no ffmpeg has published yet: the stream ended
// while its ffmpeg was restarting, or waiting for its RTMP name (a moved
// stream's previous server still holding it). Beyond it, that audio is
// dropped and counted.
const endFlush = 10 * time.Second

// finish ends the stream's ffmpeg after handing it the last held frame. If
// audio is still held for an ffmpeg that has not published (see settle),
// it starts more, with the restart backoff, until one publishes it or
// endFlush passes, and then leaves what is left in pending; unless the
// stream never went live and its client was told why (Err). Must hold
// wsem.
func (s *Session) finish() {
	var last []byte
	if s.scan != nil {
		last = s.scan.flush()
	}
	deadline := time.Now().Add(endFlush)
	// A stream that never went live and failed for a reason other than a
	// held name was told so (a 502, a closed connection): its audio was
	// not taken, and publishing it later would surprise.
	retry := s.Err() == nil
	for failures := 0; ; {
		if proc := s.proc; proc != nil {
			held := s.unsettled == proc
			if len(last) > 0 {
				if held {
					s.pending = append(s.pending, last...)
				}
				s.writeProc(last)
				last = nil
			}
			if held && !isClosed(proc.Ready()) {
				// Still starting (a slow start on a busy machine): the
				// flush grace counts from its publish, not from now.
				proc.CloseInput()
				select {
				case <-proc.Ready():
				case <-proc.Done():
				case <-time.After(max(time.Until(deadline), s.cfg.StartTimeout)):
				case <-s.abort:
				}
			}
			proc.Stop(s.cfg.FlushGrace)
			s.proc = nil
			if !held || isClosed(proc.Ready()) {
				s.forgetHeld() // it went out with that publish
				return
			}
		} else if len(last) > 0 {
			s.pending = append(s.pending, last...)
			last = nil
		}
		if len(s.pending) == 0 || s.aborted() || !retry {
			return
		}
		failures++
		wait := backoff(failures)
		if time.Until(deadline) < wait {
			s.log.WithField("held_seconds", fmt.Sprintf("%.2f", s.pendAud.Seconds())).
				Warnf("the stream ended and no ffmpeg published its held audio within %s", endFlush)
			return
		}
		if failures == 1 {
			s.log.WithField("held_seconds", fmt.Sprintf("%.2f", s.pendAud.Seconds())).
				Info("the stream ended with audio no ffmpeg has published yet; publishing it before the end")
		}
		select {
		case <-time.After(wait):
		case <-s.abort:
			return
		}
		s.restartProc() // on failure, s.proc stays nil: the next round waits and tries again
	}
}

// forgetHeld empties pending once an ffmpeg has published it. Must hold
// wsem.
func (s *Session) forgetHeld() {
	s.unsettled = nil
	s.clearPending()
}

// clearPending empties pending. Must hold wsem.
func (s *Session) clearPending() {
	if len(s.pending) == 0 {
		return
	}
	s.cfg.Observer.Buffered(-len(s.pending))
	s.pending, s.pendAud = s.pending[:0], 0
	s.mu.Lock()
	s.buffered = 0
	s.mu.Unlock()
}

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
	s.abortOnce.Do(func() { close(s.abort) })
	s.mu.Lock()
	p := s.running
	s.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// write hands p to ffmpeg. It waits for earlier writers (giving up when
// ctx ends), starts ffmpeg with the stream's first audio, and returns once
// the bytes are in ffmpeg's stdin, or held for an ffmpeg that is
// restarting. With awaitStart, the write that started the session's first
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
		if err = s.awaitPublish(started); err != nil {
			s.forgetUnpublished()
		}
	}
	return res, err
}

// forgetUnpublished drops the audio held for a stream that never went
// live: its first request is answered with ffmpeg's error, and the client
// sends it again.
func (s *Session) forgetUnpublished() {
	select {
	case s.wsem <- struct{}{}:
	case <-s.endReq:
		return
	}
	defer func() { <-s.wsem }()
	s.mu.Lock()
	published := s.published
	s.mu.Unlock()
	if !published {
		s.clearPending()
	}
}

// writeLocked does write's work. Must hold wsem. It returns the ffmpeg it
// started, if this write started the session's first.
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

	var started *ffpipe.Proc
	var audio time.Duration
	data := p
	for {
		var dataAudio time.Duration
		if s.scan != nil {
			before := s.scan.stats.Audio
			var err error
			if data, err = s.scan.feed(data); err != nil {
				if !s.everStarted() {
					s.requestEnd(CauseNotMP3, "first data was not MP3")
				}
				return Result{}, nil, err
			}
			dataAudio = s.scan.stats.Audio - before
		}
		if len(data) > 0 {
			first, err := s.deliver(data, dataAudio)
			if err != nil {
				return Result{}, nil, err
			}
			if first != nil {
				started = first
			}
		}
		audio += dataAudio
		// A new recording (another sample rate or channel count) needs an
		// ffmpeg of its own; the scanner stopped at its first frame.
		if s.scan == nil || !s.scan.formatChanged {
			break
		}
		s.scan.formatChanged = false
		s.replaceProc()
		data = nil
	}
	s.mu.Lock()
	s.bytes += int64(len(p))
	s.audio += audio
	info := s.infoLocked()
	s.mu.Unlock()
	s.cfg.Observer.Accepted(src.Transport, len(p), audio)
	return Result{Bytes: int64(len(p)), Audio: audio, Total: info}, started, nil
}

// everStarted tells whether an ffmpeg was ever started for the session.
func (s *Session) everStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid != 0
}

// deliver writes whole frames to ffmpeg, starting the first one, or holds
// them while ffmpeg restarts. Must hold wsem.
func (s *Session) deliver(data []byte, audio time.Duration) (*ffpipe.Proc, error) {
	var started *ffpipe.Proc
	if !s.everStarted() {
		if err := s.startProc(); err != nil {
			s.requestEnd(CauseFFmpeg, err.Error())
			return nil, err
		}
		started = s.proc
		s.unsettled = started
		s.firstProc = true
	}
	s.settle()
	s.mu.Lock()
	published, lastErr := s.published, s.err
	s.mu.Unlock()
	if started == nil && !published && lastErr != nil && !lastErr.nameTaken() {
		// Never live yet and the last attempt failed: say why rather than
		// pile up audio. A retrying ffmpeg still gets the audio, so that
		// it can publish once the server is back.
		if s.proc != nil {
			s.writeProc(data)
		}
		return nil, lastErr
	}
	if s.proc == nil {
		return nil, s.hold(data, audio)
	}
	if s.unsettled != nil {
		// This ffmpeg has not published yet: keep a copy until it has,
		// for the next one if it fails (beyond the buffer, no copy).
		if err := s.hold(data, audio); err != nil && !s.firstProc {
			return nil, err
		}
		s.writeProc(data) // a failure is handled by its watcher
		return started, nil
	}
	if err := s.writeProc(data); err != nil {
		s.log.WithError(err).Debug("ffmpeg went away during a write; holding the audio for its successor")
		s.proc = nil
		return nil, s.hold(data, audio)
	}
	s.record(data, audio)
	s.advance(audio)
	return nil, nil
}

// replayWindow is how much audio written to the running ffmpeg is kept,
// to be written again if it dies before sending it: ffmpeg reports its
// output time every 0.5 s, and what it had read beyond that (in its pipe
// and its buffers) would otherwise be lost with it.
const replayWindow = 5 * time.Second

type sentChunk struct {
	start int           // offset in sentBuf
	end   time.Duration // the ffmpeg's input audio after this chunk
}

// record remembers audio written to the current ffmpeg, in one buffer
// reused from write to write. Must hold wsem.
func (s *Session) record(data []byte, audio time.Duration) {
	if s.sentTo != s.proc {
		s.sentBuf, s.sent, s.sentAudio, s.sentTo = s.sentBuf[:0], s.sent[:0], 0, s.proc
	}
	s.sentAudio += audio
	s.sent = append(s.sent, sentChunk{start: len(s.sentBuf), end: s.sentAudio})
	s.sentBuf = append(s.sentBuf, data...)
	drop := 0
	for drop < len(s.sent)-1 && s.sent[drop].end < s.sentAudio-replayWindow {
		drop++
	}
	if drop == 0 {
		return
	}
	cut := s.sent[drop].start
	s.sentBuf = append(s.sentBuf[:0], s.sentBuf[cut:]...)
	s.sent = append(s.sent[:0], s.sent[drop:]...)
	for i := range s.sent {
		s.sent[i].start -= cut
	}
}

// replayLost puts back in front of the held audio what proc had been
// given but had not yet sent when it died (beyond its last reported output
// time; that report may be up to 0.5 s old, so a little may be sent twice
// rather than lost). Must hold wsem.
func (s *Session) replayLost(proc *ffpipe.Proc) {
	if s.sentTo != proc {
		return
	}
	out := proc.Progress().OutTime
	var replay []byte
	var audio time.Duration
	for i, c := range s.sent {
		if c.end > out {
			replay = append([]byte(nil), s.sentBuf[c.start:]...)
			audio = s.sentAudio - out
			if i > 0 {
				audio = s.sentAudio - max(out, s.sent[i-1].end)
			}
			break
		}
	}
	s.sentBuf, s.sent, s.sentAudio, s.sentTo = s.sentBuf[:0], s.sent[:0], 0, nil
	if len(replay) == 0 {
		return
	}
	s.pending = append(replay, s.pending...)
	s.pendAud += audio
	s.cfg.Observer.Buffered(len(replay))
	s.mu.Lock()
	s.buffered = len(s.pending)
	s.mu.Unlock()
	s.log.WithField("replay_seconds", fmt.Sprintf("%.2f", audio.Seconds())).Info("audio the failed ffmpeg had not sent will go to the next one")
}

// advance moves the media clock after audio was handed on. Must hold wsem.
func (s *Session) advance(audio time.Duration) {
	if s.clock0.IsZero() {
		s.clock0 = time.Now()
	}
	s.fed += audio
}

// hold keeps frames for the next ffmpeg, within the buffer's bounds. Must
// hold wsem.
func (s *Session) hold(data []byte, audio time.Duration) error {
	if (s.cfg.BufferBytes > 0 && len(s.pending)+len(data) > s.cfg.BufferBytes) ||
		(s.cfg.BufferAudio > 0 && s.pendAud+audio > s.cfg.BufferAudio) {
		return ErrBufferFull
	}
	s.pending = append(s.pending, data...)
	s.pendAud += audio
	s.advance(audio)
	s.cfg.Observer.Buffered(len(data))
	s.mu.Lock()
	s.buffered = len(s.pending)
	s.mu.Unlock()
	return nil
}

// startProc starts an ffmpeg and its watcher. Must hold wsem.
func (s *Session) startProc() error {
	fc := s.cfg.FFmpeg
	fc.Target = Target(s.cfg.RTMPBase, s.id)
	fc.LiveID = s.id
	if s.scan != nil {
		fc.InputFormat = "flv" // MP3 frames in FLV tags: see flvFramer
	}
	if fc.AudioCodec == "copy" && !s.flvCarries() {
		fc.AudioCodec = "aac"
	}
	proc, err := ffpipe.Start(context.TODO(), fc, s.log) // TODO: a context that ends with the stream
	if err != nil {
		s.log.WithError(err).Error("cannot start ffmpeg")
		return &UpstreamError{Reason: err.Error()}
	}
	s.proc = proc
	s.cfg.Observer.FFmpegStarted()
	s.mu.Lock()
	first := s.pid == 0
	if s.state != StateEnding { // an ending stream's last tries stay ending
		s.state = StateLive
	}
	s.pid = proc.Pid()
	s.running = proc
	s.liveAt = time.Time{}
	s.ffstate = "starting"
	s.mu.Unlock()
	if first {
		s.log.WithFields(logrus.Fields{"pid": proc.Pid(), "target": redact.URL(fc.Target, s.id)}).Info("session started")
	}
	go s.watch(proc)
	return nil
}

// flvCarries tells whether FLV can carry this stream's audio as it is:
// MP3 at 44.1, 22.05 or 11.025 kHz (the rates FLV's header can say). Other
// audio (16 kHz MP3 from a mini-program, Opus from a browser) is encoded
// to AAC even with -audio-codec copy, or ffmpeg would refuse the output.
// Must hold wsem.
func (s *Session) flvCarries() bool {
	if s.scan == nil || !s.scan.started() {
		return false
	}
	rate := s.scan.last.sampleRate
	if s.scan.formatPending { // replacing ffmpeg for the next frame's format
		rate = mustParse(s.scan.carry).sampleRate
	}
	switch rate {
	case 44100, 22050, 11025:
		return true
	}
	if !s.warnedCopy {
		s.warnedCopy = true
		s.log.WithField("sample_rate", rate).Warn("FLV cannot carry MP3 at this sample rate: this stream is encoded to AAC despite -audio-codec copy")
	}
	return false
}

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
	d := backoffFirst << min(failures-1, 10)
	d = min(d, backoffMax)
	return d - time.Duration(rand.Int64N(int64(d/5)+1)) // 80-100%: never beyond the cap
}

// watch follows one ffmpeg to its end. If it was the session's current
// ffmpeg and the session is not ending, it schedules a restart.
func (s *Session) watch(proc *ffpipe.Proc) {
	startedAt := time.Now()
	select {
	case <-proc.Ready():
		s.mu.Lock()
		s.published = true
		if s.running == proc {
			s.ffstate = "publishing"
			s.liveAt = time.Now()
		}
		s.mu.Unlock()
		select { // the audio held for this ffmpeg is published: let it go
		case s.wsem <- struct{}{}:
			s.settle()
			<-s.wsem
		case <-s.endReq:
		}
	case <-proc.Done():
	}
	<-proc.Done()
	err := proc.Err()
	s.cfg.Observer.FFmpegExited(ffpipe.ExitCause(err))
	s.noteExit(proc, err) // see outside.go
	select {
	case s.wsem <- struct{}{}:
	case <-s.endReq:
		return // run stops and reaps it
	}
	if s.proc == proc {
		s.proc = nil
	}
	// Another ffmpeg already took over: a format change replaced this one
	// on purpose, or a restart ran. Otherwise none runs now.
	replaced := s.proc != nil
	if !replaced && !s.ending() {
		s.replayLost(proc)
	}
	<-s.wsem
	if !replaced {
		s.endIfStoppedOutside() // then endReason is set: no restart below
	}
	s.mu.Lock()
	if s.running == proc {
		s.running = nil
	}
	if replaced || s.endReason != "" {
		s.mu.Unlock()
		return
	}
	reason := "ffmpeg exited"
	if err != nil {
		reason = strings.TrimPrefix(err.Error(), "ffmpeg ")
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
	s.ffstate = "restarting"
	s.mu.Unlock()
	s.log.WithFields(logrus.Fields{"pid": proc.Pid(), "retry_in": delay.Round(time.Millisecond).String(),
		"ffmpeg_tail": strings.Join(proc.Tail(), " | ")}).Warn("ffmpeg ended unexpectedly: " + reason)
	go s.restartAfter(delay)
}

// restartAfter starts a new ffmpeg after delay and hands it the audio held
// meanwhile.
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
	if s.proc != nil || s.ending() {
		return
	}
	if err := s.restartProc(); err != nil {
		s.mu.Lock()
		s.failures++
		next := backoff(s.failures)
		s.mu.Unlock()
		go s.restartAfter(next)
	}
}

// restartProc starts another ffmpeg after a failure and hands it the held
// audio. Must hold wsem.
func (s *Session) restartProc() error {
	if s.endIfStoppedOutside() { // the server began to drain after the exit
		return errStoppedOutside
	}
	if err := s.startProc(); err != nil {
		return err
	}
	s.mu.Lock()
	s.stoppedOutside = false
	s.restarts++
	s.mu.Unlock()
	s.cfg.Observer.FFmpegRestarted()
	s.flushPending()
	return nil
}

// flushPending writes the held audio to a restarted ffmpeg. The audio
// stays held until that ffmpeg has published (settle): one that fails to
// connect takes what is in its pipe with it, and the next one needs it
// again. Must hold wsem.
func (s *Session) flushPending() {
	if len(s.pending) == 0 || s.proc == nil {
		return
	}
	s.unsettled = s.proc
	s.firstProc = false
	s.writeProc(s.pending) // on failure this ffmpeg's watcher restarts again
}

// settle forgets the held audio once the ffmpeg it was written to has
// published it. Must hold wsem.
func (s *Session) settle() {
	if s.unsettled == nil {
		return
	}
	select {
	case <-s.unsettled.Ready():
	default:
		if s.unsettled != s.proc {
			s.unsettled = nil // that ffmpeg is gone unpublished; the next flush writes again
		}
		return
	}
	if !s.firstProc {
		s.log.WithField("held_seconds", fmt.Sprintf("%.2f", s.pendAud.Seconds())).Info("ffmpeg restarted; held audio delivered")
	}
	s.forgetHeld()
}

// replaceProc ends the current ffmpeg cleanly (its publish flushed and
// closed) and starts another for a stream whose format changed. Must hold
// wsem.
func (s *Session) replaceProc() {
	old := s.proc
	s.proc = nil
	if old != nil {
		s.log.Info("the MP3 format changed (a new recording): restarting ffmpeg")
		old.Stop(s.cfg.FlushGrace)
	}
	if err := s.startProc(); err != nil {
		s.mu.Lock()
		s.err = err.(*UpstreamError)
		s.failures++
		next := backoff(s.failures)
		s.ffstate = "restarting"
		s.mu.Unlock()
		go s.restartAfter(next)
	}
}

// writeProc writes to stdin with a deadline. Must hold wsem.
func (s *Session) writeProc(data []byte) error {
	start := time.Now()
	if s.scan != nil {
		data = s.flv.frame(data, s.flvTo != s.proc)
	}
	// Moving the deadline re-arms a runtime timer, a tenth of the cost of
	// a write: it moves once half of it has passed, so a blocked write
	// fails after between half and all of WriteTimeout.
	if s.flvTo != s.proc || s.deadline.Sub(start) < s.cfg.WriteTimeout/2 {
		s.deadline = start.Add(s.cfg.WriteTimeout)
		s.proc.SetWriteDeadline(s.deadline)
	}
	s.flvTo = s.proc
	_, err := s.proc.Write(data)
	if err == nil {
		s.cfg.Observer.StdinWritten(time.Since(start))
		s.mu.Lock()
		s.lastWrite = time.Now()
		s.mu.Unlock()
		return nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// ffmpeg is stuck: end it; its watcher starts another.
		stuck := &UpstreamError{Reason: fmt.Sprintf("ffmpeg took no input for %s", time.Since(start).Round(time.Millisecond))}
		s.log.Warn(stuck.Reason + "; restarting it")
		s.killOnPurpose(s.proc, stuck.Reason)
		return stuck
	}
	return err
}

// starveWait: ffmpeg may need more input than the first write before it
// opens its output (WebM: its header and a cluster; MP3, framed in FLV,
// opens after one frame); when it has read all it was given and still has
// not opened it, it is waiting for more input, and the first chunk is
// acknowledged after this rather than after StartTimeout. ffmpeg reads a
// pipe as soon as data is there, so a pipe empty this long means it wants
// more; a refused RTMP connection is reported well within it (measured:
// 502 ~50 ms after the first POST). Measured with 100 ms chunks of raw
// MP3: 500 ms here made the first audio reach a subscriber after ~1.1 s,
// because each client waits for its first reply before sending the next
// chunk.
const starveWait = 150 * time.Millisecond

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
			err := s.procFailure(proc)
			if ue := (*UpstreamError)(nil); errors.As(err, &ue) && ue.nameTaken() {
				// Another publisher still holds the name (this stream's
				// previous server draining): the audio is held until the
				// name is free.
				return nil
			}
			return err
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

// procFailure waits briefly for a failing ffmpeg's exit and returns why it
// failed, as ffmpeg said it.
func (s *Session) procFailure(proc *ffpipe.Proc) error {
	select {
	case <-proc.Done():
	case <-time.After(s.cfg.StartTimeout):
	}
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
	s.mu.Lock()
	if s.killed == proc {
		reason = s.killedWhy
	}
	s.mu.Unlock()
	err := &UpstreamError{Reason: reason}
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	return err
}

// checkStall looks at the current ffmpeg's output and at its server's
// reads (see stallWatch): an ffmpeg whose output stopped advancing while
// input kept arriving is restarted; a server that stopped reading is
// reported, and its return too.
func (s *Session) checkStall(w *stallWatch, now time.Time) {
	s.mu.Lock()
	p, lastWrite := s.running, s.lastWrite
	s.mu.Unlock()
	if p == nil {
		return
	}
	o := lookAt(p, lastWrite, now)
	if o.connErr != nil && !errors.Is(o.connErr, ffpipe.ErrNoConn) {
		s.log.WithError(o.connErr).Debug("cannot read ffmpeg's connection state")
	}
	v := w.observe(o, s.cfg.StallTimeout)
	switch {
	case v.stalled != "":
		s.log.Warn(v.stalled)
		s.mu.Lock()
		s.upstream = upstreamStalled
		s.err = &UpstreamError{Reason: v.stalled}
		s.mu.Unlock()
	case v.reads:
		s.log.Info("the RTMP server reads again")
		s.mu.Lock()
		s.upstream = ""
		s.mu.Unlock()
	}
	if v.restart != "" {
		s.log.WithField("pid", p.Pid()).Warn(v.restart + "; restarting ffmpeg")
		s.killOnPurpose(p, v.restart)
	}
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

// fillGap feeds silence while the client is quiet: the media clock (audio
// handed on since the first) is kept no more than GapFill behind the wall
// clock. Client audio is never dropped, so a client that stalls and then
// sends what it queued puts the stream ahead of the clock by at most that
// stall minus GapFill; later gaps spend that lead before any silence is
// added, so the delay does not accumulate. It returns when the next fill
// falls due (zero: none until the stream has audio), for run's timer.
func (s *Session) fillGap(now time.Time) (due time.Time) {
	if s.cfg.GapFill <= 0 || s.scan == nil {
		return time.Time{}
	}
	select {
	case s.wsem <- struct{}{}:
	default:
		return now.Add(gapRetry) // a client is writing: no gap
	}
	defer func() { <-s.wsem }()
	s.settle()
	if s.proc == nil || s.clock0.IsZero() || !s.scan.started() || s.ending() {
		return time.Time{}
	}
	// Not before the publish, and not within GapFill of it: silence would
	// keep nothing alive, and a client whose first POST waits for the
	// publish is not quiet but waiting for us (on a busy machine that wait
	// passed GapFill, and every stream began with silence that delayed it
	// for good).
	s.mu.Lock()
	liveAt := s.liveAt // zero until proc has published
	s.mu.Unlock()
	// Nor while the server drains: a quiet client has most likely moved to
	// another server, and silence here would play before its audio there
	// (drainIdle ends the stream soon).
	if liveAt.IsZero() || s.draining.Load() {
		return now.Add(gapRetry)
	}
	// The next fill is due when the media clock falls GapFill behind.
	due = s.clock0.Add(s.fed + s.cfg.GapFill + time.Millisecond)
	if grace := liveAt.Add(s.cfg.GapFill); now.Before(grace) {
		if due.Before(grace) {
			due = grace
		}
		return due
	}
	lag := now.Sub(s.clock0) - s.fed
	if lag <= s.cfg.GapFill {
		return due
	}
	if s.silent == nil || !sameStream(s.scan.last, mustParse(s.silent)) {
		s.silent = silentFrame(s.scan.last)
	}
	// Fill a step beyond the threshold, so that a quiet stream wakes
	// once a step rather than once a frame.
	dur := s.scan.last.duration()
	step := min(gapStep, s.cfg.GapFill/2)
	n := int((lag-s.cfg.GapFill+step)/dur) + 1
	buf := make([]byte, 0, n*len(s.silent))
	for i := 0; i < n; i++ {
		buf = append(buf, s.silent...)
	}
	if err := s.writeProc(buf); err != nil {
		return time.Time{}
	}
	s.record(buf, time.Duration(n)*dur)
	s.fed += time.Duration(n) * dur
	s.mu.Lock()
	s.silence += time.Duration(n) * dur
	s.mu.Unlock()
	return s.clock0.Add(s.fed + s.cfg.GapFill + time.Millisecond)
}
