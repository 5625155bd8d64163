package session

import (
	"strings"
	"time"

	"ffmpeg-publisher/internal/redact"
)

// What an application outside learns of streams and may change about
// them (package hooks): each stream's start and end, a handle to revoke
// it, and the settings its on_publish answer gives it.

// Watcher hears of every session's start and end. Its calls come from the
// session's own goroutine, outside every lock, and must not block.
type Watcher interface {
	// StreamStarted: a session was created for the first data of its ID.
	StreamStarted(st Stream)
	// StreamEnded: the session has ended (ffmpeg reaped); once per
	// session, with its final figures.
	StreamEnded(st Stream, final Info)
}

type nopWatcher struct{}

func (nopWatcher) StreamStarted(Stream)     {}
func (nopWatcher) StreamEnded(Stream, Info) {}

// Stream is a handle on one session, comparable, valid after it ended.
type Stream struct {
	r *Registry
	s *Session
}

// ID is the stream's live ID.
func (st Stream) ID() string { return st.s.id }

// Info is a snapshot of the stream's figures so far.
func (st Stream) Info() Info { return st.s.Info() }

// Superseded tells whether another session holds the stream's ID now: a
// newer stream, to which nothing said of this one applies.
func (st Stream) Superseded() bool {
	st.r.mu.Lock()
	defer st.r.mu.Unlock()
	cur := st.r.sessions[st.s.id]
	return cur != nil && cur != st.s
}

// CauseRevoked: an application withdrew the stream's permission (an
// on_update hook refused it).
const CauseRevoked Cause = "revoked"

// Revoke ends the stream now and disconnects its publisher (the WebSocket
// or upload holding the ID), which is told reason: the application
// withdrew its permission. A session that already left the registry (a
// new one may hold the ID) is only ended.
func (st Stream) Revoke(reason error) {
	r := st.r
	r.mu.Lock()
	if r.sessions[st.s.id] == st.s {
		if pub := r.claims[st.s.id]; pub != nil {
			delete(r.claims, st.s.id)
			pub.why = reason
			close(pub.kicked)
		}
	}
	r.mu.Unlock()
	st.s.mu.Lock()
	st.s.revoked = reason
	st.s.mu.Unlock()
	st.s.requestEnd(CauseRevoked, reason.Error())
}

// revocation is the reason the stream was revoked, if it was.
func (s *Session) revocation() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revoked
}

// Overrides are what an application's on_publish answer sets for one new
// stream; a zero field keeps the server's setting.
type Overrides struct {
	// Output replaces the stream's outputs (-rtmp, -output) with this
	// one URL, where "{id}" is replaced by the stream name.
	Output string
	// Name replaces the live ID as the stream name in the output URLs
	// (and in routing).
	Name string
	// IdleTimeout replaces -idle-timeout.
	IdleTimeout time.Duration
}

// apply returns cfg with o's settings.
func (o *Overrides) apply(cfg Config) Config {
	if o == nil {
		return cfg
	}
	if o.Output != "" {
		cfg.Output = o.Output
	}
	if o.Name != "" {
		cfg.Name = o.Name
	}
	if o.IdleTimeout > 0 {
		cfg.IdleTimeout = o.IdleTimeout
	}
	return cfg
}

// streamName is the name id's stream is published under: the ID, or the
// name an on_publish answer gave.
func (c Config) streamName(id string) string {
	if c.Name != "" {
		return c.Name
	}
	return id
}

// redactID is what logs show id's outputs up to (see redact.New): the
// stream name, or, for an output from an application that names no
// stream, nothing of its path, which may be a key.
func (c Config) redactID(id string) string {
	if c.Output != "" && !strings.Contains(c.Output, "{id}") {
		return redact.WholePath
	}
	return c.streamName(id)
}
