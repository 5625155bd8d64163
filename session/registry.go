package session

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"ffmpeg-publisher/internal/wheel"

	"github.com/sirupsen/logrus"
)

// Registry maps live IDs to sessions and to the connected publisher (a
// WebSocket or a streaming upload) that holds an ID.
type Registry struct {
	cfg Config
	log *logrus.Entry

	mu       sync.Mutex // guards the fields below
	sessions map[string]*Session
	claims   map[string]*Publisher
	closed   bool
	// blocked: IDs the operator refused until a time (Kick).
	blocked map[string]time.Time
	// letGo: IDs whose session ended while the server drains. They are
	// not started again here: their client was moved to another server,
	// and a second publish from this one would split the stream.
	letGo map[string]struct{}
	// running holds every session whose run has not returned, including
	// ending ones no longer in sessions; wg counts the same.
	running  map[*Session]struct{}
	wg       sync.WaitGroup
	draining atomic.Bool
	ended    endedSeqs // numbering of streams ended by their clients
	// waiting: sessions whose prestarted ffmpeg waits for its first audio
	waiting atomic.Int32
}

// NewRegistry returns an empty registry.
func NewRegistry(cfg Config, log *logrus.Entry) *Registry {
	cfg = cfg.withDefaults()
	cfg.aacSilence = newAACSilence(cfg.FFmpeg.Binary, cfg.FFmpeg.ExtraEnv, log)
	cfg.wheel = wheel.New(0)
	return &Registry{
		cfg:      cfg,
		log:      log,
		sessions: make(map[string]*Session),
		claims:   make(map[string]*Publisher),
		blocked:  make(map[string]time.Time),
		letGo:    make(map[string]struct{}),
		running:  make(map[*Session]struct{}),
	}
}

// Len is the number of sessions not yet ending.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Info returns a snapshot of id's session.
func (r *Registry) Info(id string) (Info, bool) {
	r.mu.Lock()
	s, pub := r.sessions[id], r.claims[id]
	r.mu.Unlock()
	if s == nil {
		return Info{}, false
	}
	info := s.Info()
	if pub != nil {
		info.Publisher = pub.src.Transport
	}
	return info, true
}

// List returns snapshots of all sessions, ordered by ID.
func (r *Registry) List() []Info {
	r.mu.Lock()
	ids := make([]string, 0, len(r.sessions))
	for id := range r.sessions {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	sort.Strings(ids)
	out := make([]Info, 0, len(ids))
	for _, id := range ids {
		if info, ok := r.Info(id); ok {
			out = append(out, info)
		}
	}
	return out
}

// Source describes a writer, for logs, the stream API and metrics.
type Source struct {
	Transport string // "base64", "websocket", "upload"
	Remote    string // the client's address
	// Format is the audio's container for ffmpeg's -f ("mp3", "webm"),
	// or "pcm"; "" means the registry's (MP3). It is fixed when the
	// session starts.
	Format string
	// Rate and Channels describe PCM (see CheckPCM); 0 for other formats.
	Rate, Channels int
	// Overrides apply to the session this writer starts, if it starts
	// one (an on_publish answer); nil changes nothing.
	Overrides *Overrides
	// Approve, when set, is asked (outside every lock) before this writer
	// starts a stream, or takes a live one over (takeover), unless
	// Approved says its request was asked already; it returns the new
	// stream's Overrides. An approval starts, or takes, one stream.
	Approve  func(ctx context.Context, takeover bool) (*Overrides, error)
	Approved bool
	takeover bool // what errApprove asks for: a takeover, not a new stream
	// Stats, when set, reports a WebRTC publisher's receiver figures for
	// the stream list; it must not call into the session.
	Stats func() *WebRTCStats
}

// errApprove: the writer would start a stream it was not approved for.
var errApprove = errors.New("a new stream needs approval")

// approve asks src's Approve for a stream about to start.
func (src *Source) approve(ctx context.Context) error {
	ov, err := src.Approve(ctx, src.takeover)
	src.takeover = false
	if err != nil {
		return err
	}
	src.Overrides, src.Approved = ov, true
	return nil
}

// Write appends one chunk (a legacy POST) to id's stream, creating the
// session if there is none. It returns once the bytes are in ffmpeg's stdin.
func (r *Registry) Write(ctx context.Context, id string, src Source, p []byte) (Result, error) {
	res, _, err := r.writeTo(ctx, id, &src, p, nil)
	return res, err
}

// WriteSeq writes chunk c.Seq of id's stream in order (see seq.go). With
// c.End the stream ends once the chunk is written.
func (r *Registry) WriteSeq(ctx context.Context, id string, src Source, c SeqChunk, p []byte) (SeqResult, error) {
	if !ValidID(id) {
		return SeqResult{}, ErrInvalidID
	}
	if c.Seq < 0 || c.Seq > MaxSeq {
		return SeqResult{}, ErrSeqRange
	}
	k := newSeqKey(c, p)
	for attempt := 0; ; attempt++ {
		if r.endedRetry(id, k) {
			return SeqResult{Duplicate: true}, nil
		}
		s, err := r.acquire(id, nil, &src)
		if err == errApprove {
			if err = src.approve(ctx); err == nil {
				attempt--
				continue
			}
		}
		if err != nil {
			return SeqResult{}, err
		}
		res, err := s.writeSeq(ctx, src, k, p)
		if why := s.revocation(); err == errEnded && why != nil {
			return res, why // revoked: not a reason to start the stream again
		}
		if err == errEnded && attempt < 2 {
			if err := s.awaitRemoved(ctx); err != nil {
				return res, err
			}
			continue
		}
		if err == errEnded {
			err = ErrShuttingDown
		}
		if err == nil && c.End {
			r.endSeq(s)
		}
		return res, err
	}
}

// End ends id's stream now, if it has a session. It does not wait.
func (r *Registry) End(id string, cause Cause) bool {
	reason := "ended by the client"
	if cause == CauseDeleted {
		reason = "deleted through the stream API"
	}
	r.mu.Lock()
	s := r.sessions[id]
	r.mu.Unlock()
	if s != nil {
		s.requestEnd(cause, reason)
	}
	return s != nil
}

// writeTo is write, also returning the session written to.
func (r *Registry) writeTo(ctx context.Context, id string, src *Source, p []byte, pub *Publisher) (Result, *Session, error) {
	if !ValidID(id) {
		return Result{}, nil, ErrInvalidID
	}
	// A session that ends while we wait for it sends us to its successor;
	// twice in a row means something is ending sessions as fast as we
	// make them, and the caller hears about it.
	for attempt := 0; ; attempt++ {
		s, err := r.acquire(id, pub, src)
		if err == errApprove {
			if err = src.approve(ctx); err == nil {
				attempt--
				continue
			}
		}
		if err != nil {
			return Result{}, nil, err
		}
		res, err := s.write(ctx, *src, p, pub == nil, false)
		if why := s.revocation(); err == errEnded && why != nil {
			return res, s, why // revoked: not a reason to start the stream again
		}
		if err == errEnded && attempt < 2 {
			if err := s.awaitRemoved(ctx); err != nil {
				return res, s, err
			}
			continue
		}
		if err == errEnded {
			err = ErrShuttingDown
		}
		return res, s, err
	}
}

// acquire returns id's session for src's format, creating it with src's
// overrides if needed (errApprove if src must be approved first; the
// approval is spent on the new session).
func (r *Registry) acquire(id string, pub *Publisher, src *Source) (*Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.refusedLocked(id); err != nil {
		return nil, err
	}
	if pub != nil && isClosed(pub.kicked) {
		return nil, pub.KickReason() // the operator's, the application's, or a newer connection's
	}
	cfg, err := r.cfg.forSource(*src)
	if err != nil {
		return nil, err
	}
	replaced, err := r.claimLocked(id, pub, src, cfg)
	if err != nil {
		return nil, err
	}
	if s := r.sessions[id]; s != nil {
		if err := formatConflict(s, *src, cfg); err != nil {
			return nil, err
		}
		r.takeLocked(id, pub, replaced, src)
		return s, nil
	}
	// running, not sessions: an ending session's ffmpeg still runs (it
	// flushes, or publishes held audio for up to endFlush) and costs as much.
	if r.cfg.MaxSessions > 0 && len(r.running) >= r.cfg.MaxSessions {
		return nil, ErrAtCapacity
	}
	if src.Approve != nil && !src.Approved {
		if a := r.cfg.Admission; a != nil {
			if err := a.Check(); err != nil {
				return nil, err // the application is not asked about a stream refused anyway
			}
		}
		return nil, errApprove
	}
	if a := r.cfg.Admission; a != nil {
		if err := a.Admit(); err != nil {
			return nil, err
		}
	}
	s := newSession(id, src.Overrides.apply(cfg), r.log, &r.draining)
	s.waitingCount = &r.waiting
	src.Overrides, src.Approved = nil, false
	r.takeLocked(id, pub, replaced, src) // only now: a refused newcomer leaves the holder be
	r.sessions[id] = s
	r.ended.forget(id)
	r.cfg.Observer.SessionStarted()
	r.running[s] = struct{}{}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		st := Stream{r: r, s: s}
		r.cfg.Watcher.StreamStarted(st)
		s.run(func() { r.remove(s) })
		final := s.Info()
		r.cfg.Observer.SessionEnded(final.Cause)
		r.cfg.Watcher.StreamEnded(st, final)
		r.mu.Lock()
		delete(r.running, s)
		r.mu.Unlock()
	}()
	return s, nil
}

// CheckNew tells, without taking a place, whether a stream for id could
// start now: nil when id has a session, or when admission control would
// admit a new one. For transports that commit to a client before its audio.
func (r *Registry) CheckNew(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[id] != nil || r.cfg.Admission == nil {
		return nil
	}
	return r.cfg.Admission.Check()
}

// remove deletes s's entry, but only if the entry is still s: a new session
// for the same ID may already have taken its place.
func (r *Registry) remove(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[s.id] == s {
		delete(r.sessions, s.id)
		if r.draining.Load() {
			r.letGo[s.id] = struct{}{}
		}
	}
}

// BlockedError refuses a live ID the operator blocked, whatever the
// credentials (DELETE /streams/ID?block=…).
type BlockedError struct{ Until time.Time }

func (e *BlockedError) Error() string {
	return "this live id is blocked by the operator until " + e.Until.UTC().Format(time.RFC3339)
}

// refusedLocked tells why id may not get a session or a publisher now, if
// it may not: the registry is closed, the ID blocked or let go. Must hold
// mu.
func (r *Registry) refusedLocked(id string) error {
	if r.closed {
		return ErrShuttingDown
	}
	if until, ok := r.blocked[id]; ok {
		if time.Now().Before(until) {
			return &BlockedError{Until: until}
		}
		delete(r.blocked, id)
	}
	if _, gone := r.letGo[id]; gone {
		return ErrShuttingDown
	}
	return nil
}

// Kick removes id's publisher for the operator: the session ends now, the
// attached connection (if any) is told to go (Publisher.Kicked) and its
// writes are refused, and with until in the future the ID is refused
// until then. It reports whether there was a session or a connection.
func (r *Registry) Kick(id string, until time.Time) bool {
	now := time.Now()
	r.mu.Lock()
	for other, t := range r.blocked {
		if !now.Before(t) {
			delete(r.blocked, other)
		}
	}
	if now.Before(until) {
		r.blocked[id] = until
	}
	s, pub := r.sessions[id], r.claims[id]
	if pub != nil {
		delete(r.claims, id) // the ID is free for another publisher
		close(pub.kicked)
	}
	r.mu.Unlock()
	if s != nil {
		s.requestEnd(CauseDeleted, "deleted through the stream API")
	}
	return s != nil || pub != nil
}

// Drain prepares a shutdown behind a load balancer: every stream keeps
// being served, but one that receives no data for a moment (its client
// was sent to another server) ends at once, freeing its RTMP name, and its
// ID gets no new session here (ErrShuttingDown) until the server stops.
func (r *Registry) Drain() { r.draining.Store(true) }

// Close refuses new sessions and ends every session: stdin closed so
// ffmpeg sends what it has. When ctx ends first, the remaining ffmpegs are
// killed. Close returns when every session has ended.
func (r *Registry) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.draining.Store(true) // sessions see it: no ffmpeg stopped from outside is republished
	all := make([]*Session, 0, len(r.running))
	for s := range r.running {
		all = append(all, s)
	}
	r.mu.Unlock()
	for _, s := range all {
		s.requestEnd(CauseShutdown, "shutdown")
	}
	finished := make(chan struct{})
	go func() { r.wg.Wait(); r.cfg.aacSilence.close(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	for _, s := range all {
		s.kill()
	}
	<-finished
	return ctx.Err()
}
