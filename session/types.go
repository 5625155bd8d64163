package session

import (
	"errors"
	"strings"
	"time"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/wheel"
)

// Errors a transport maps to replies.
var (
	ErrInvalidID    = errors.New("invalid live id: use 1 to 64 characters from A-Z a-z 0-9 _ -")
	ErrAtCapacity   = errors.New("too many live sessions on this server, try again later")
	ErrShuttingDown = errors.New("the server is shutting down")
	ErrBusy         = errors.New("this live id already has a publisher connected")
	ErrNotMP3       = errors.New("data is not MP3: no MPEG audio layer III frame found")
	ErrFormat       = errors.New("this live id is streaming another audio format")
	ErrBufferFull   = errors.New("this stream's buffer is full: the RTMP server has not taken its audio yet, retry shortly")
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

// ValidID tells whether id is an acceptable live ID: 1 to 64 of
// [A-Za-z0-9_-]. IDs become part of an RTMP URL, so nothing that could
// change its meaning gets through. Checked on every write: no regexp.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Target returns the output URL for id: base with "{id}" replaced, or
// base + "/" + id; an srt:// base without "{id}" as it is (SRT names a
// stream in its query: streamid={id}).
func Target(base, id string) string {
	if strings.Contains(base, "{id}") {
		return strings.ReplaceAll(base, "{id}", id)
	}
	if ffpipe.Scheme(base) == "srt" {
		return base
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
	// RecordDir, when set, gets a file per ffmpeg of each stream (see
	// recordFile).
	RecordDir string
	// Route gives a live ID's output URLs, primary first, with name (the
	// stream's name: see OutputsFor) in them; nil, or none for an ID,
	// means RTMPBase's.
	Route func(id, name string) []string
	// IdleTimeout ends a session without data; 0 means 30s.
	IdleTimeout time.Duration
	// MaxSessions caps live sessions; 0 means no cap.
	MaxSessions int
	// Takeover lets a new connection for a held ID replace the one holding
	// it (a phone that changed networks reconnects before its old
	// connection times out); false: the newcomer is refused (ErrBusy).
	Takeover bool
	// Admission decides whether a new stream may start (see package
	// admission); nil admits every one.
	Admission Admission
	// Prestart starts the ffmpeg of a connection's new stream when the
	// connection is admitted, before its audio (Publisher.Prestart);
	// false: at its first audio.
	Prestart bool
	// PrestartWait: an ffmpeg started when a connection opened, before
	// its audio (Publisher.Prestart), is stopped if none comes this long;
	// 0 means 10s.
	PrestartWait time.Duration
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

	aacSilence *aacSilence  // the registry's, for AAC gap fill
	wheel      *wheel.Wheel // the registry's: every session's timed checks on one timer
	// Watcher hears of each stream's start and end (the HTTP hooks);
	// nil means nobody.
	Watcher Watcher
	// Output and Name are set per stream by its Overrides (see watch.go);
	// "" means OutputsFor's usual choice.
	Output, Name string
}

// Admission is asked, under the registry's lock (so it must not block),
// before a new stream starts; data for a running stream never is. Its
// errors go to the client as they are.
type Admission interface {
	Check() error // would a new stream be refused now? Takes no place
	Admit() error // take a place for one new stream, or refuse it
}

// Observer receives events from sessions. Calls come from many goroutines
// and must not block.
type Observer interface {
	SessionStarted()
	SessionEnded(cause Cause)
	FFmpegStarted()
	FFmpegRestarted()
	Buffered(delta int)              // unconfirmed bytes in stream logs: + accepted, - sent on or dropped
	Dropped(cause string, bytes int) // accepted bytes given up (see DropCause)
	FFmpegExited(cause string)       // ffpipe.ExitCause
	Accepted(transport string, bytes int, audio time.Duration)
	StdinWritten(took time.Duration)
}

type nopObserver struct{}

func (nopObserver) SessionStarted()                     {}
func (nopObserver) SessionEnded(Cause)                  {}
func (nopObserver) FFmpegStarted()                      {}
func (nopObserver) FFmpegRestarted()                    {}
func (nopObserver) Buffered(int)                        {}
func (nopObserver) Dropped(string, int)                 {}
func (nopObserver) FFmpegExited(string)                 {}
func (nopObserver) Accepted(string, int, time.Duration) {}
func (nopObserver) StdinWritten(time.Duration)          {}

func (c Config) withDefaults() Config {
	if c.PrestartWait <= 0 {
		c.PrestartWait = 10 * time.Second
	}
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
	if c.Watcher == nil {
		c.Watcher = nopWatcher{}
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
	Sent      float64       `json:"sent_seconds"`        // of the stream (audio and silence), confirmed sent by its ffmpegs
	Held      float64       `json:"held_seconds"`        // accepted, not yet confirmed sent: the stream's lag
	Format    string        `json:"format"`              // of the audio in: mp3, webm, aac
	Publisher string        `json:"publisher,omitempty"` // transport of the connection holding the ID
	Transport string        `json:"transport,omitempty"` // of the latest write
	Remote    string        `json:"remote,omitempty"`    // of the latest write
	LastError string        `json:"last_error,omitempty"`
	Outputs   OutputStates  `json:"outputs"`            // each output's state, primary first
	Recording RecordingInfo `json:"recording,omitzero"` // with -record-dir: the current archive file
	EndReason string        `json:"end_reason,omitempty"`
	WebRTC    *WebRTCStats  `json:"webrtc,omitempty"` // of a WHIP publisher
	Cause     Cause         `json:"-"`
}

// Result tells what one write accepted.
type Result struct {
	Bytes int64         // input bytes accepted
	Audio time.Duration // audio they completed
}
