package session

import (
	"context"
	"errors"
	"fmt"
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
	// starts a stream, unless Approved says its request was asked already;
	// it returns the new stream's Overrides. An approval starts one stream.
	Approve  func(context.Context) (*Overrides, error)
	Approved bool
	// Stats, when set, reports a WebRTC publisher's receiver figures for
	// the stream list; it must not call into the session.
	Stats func() *WebRTCStats
}

// errApprove: the writer would start a stream it was not approved for.
var errApprove = errors.New("a new stream needs approval")

// approve asks src's Approve for a stream about to start.
func (src *Source) approve(ctx context.Context) error {
	ov, err := src.Approve(ctx)
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
	if r.closed {
		return nil, ErrShuttingDown
	}
	if err := r.refusedLocked(id); err != nil {
		return nil, err
	}
	if pub != nil && isClosed(pub.kicked) {
		return nil, pub.KickReason() // the operator's, the application's, or a newer connection's
	}
	if holder := r.claims[id]; holder != nil && holder != pub {
		return nil, fmt.Errorf("%w (%s from %s)", ErrBusy, holder.src.Transport, holder.src.Remote)
	}
	cfg, err := r.cfg.forSource(*src)
	if err != nil {
		return nil, err
	}
	if s := r.sessions[id]; s != nil {
		if err := formatConflict(s, *src, cfg); err != nil {
			return nil, err
		}
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

// ErrKicked refuses the writes of a publisher the operator removed
// (DELETE /streams/ID): its connection is being closed.
var ErrKicked = errors.New("ended by the operator")

// BlockedError refuses a live ID the operator blocked, whatever the
// credentials (DELETE /streams/ID?block=…).
type BlockedError struct{ Until time.Time }

func (e *BlockedError) Error() string {
	return "this live id is blocked by the operator until " + e.Until.UTC().Format(time.RFC3339)
}

// refusedLocked tells why id may not get a session now, if it may not.
// Must hold mu.
func (r *Registry) refusedLocked(id string) error {
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

// Publisher is a connection that holds a live ID for as long as it is
// attached: no other connection or POST may write to that ID meanwhile.
type Publisher struct {
	r   *Registry
	id  string
	src Source

	// kicked is closed by Kick or Stream.Revoke (under the registry's
	// mu): the operator or the application removed this publisher. why
	// is set before, nil for the operator.
	kicked chan struct{}
	why    error

	mu   sync.Mutex // guards last and src's approval
	last *Session   // the session this publisher last wrote to
}

// Kicked is closed when the operator removed this publisher (Kick): its
// connection should close. A nil Publisher is never kicked.
func (p *Publisher) Kicked() <-chan struct{} {
	if p == nil {
		return nil
	}
	return p.kicked
}

// KickReason is what the connection is told once Kicked is closed:
// ErrKicked, or the application's reason (Stream.Revoke).
func (p *Publisher) KickReason() error {
	if p.why != nil {
		return p.why
	}
	return ErrKicked
}

// Attach claims id for one connection. src describes it in logs and in
// the refusal another client gets (ErrBusy).
func (r *Registry) Attach(id string, src Source) (*Publisher, error) {
	if !ValidID(id) {
		return nil, ErrInvalidID
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrShuttingDown
	}
	if err := r.refusedLocked(id); err != nil {
		return nil, err
	}
	if holder := r.claims[id]; holder != nil {
		if !r.cfg.Takeover {
			return nil, fmt.Errorf("%w (%s from %s)", ErrBusy, holder.src.Transport, holder.src.Remote)
		}
		if err := r.formatConflictLocked(id, src); err != nil {
			return nil, err // the holder keeps a stream the newcomer could not continue
		}
		holder.why = &ReplacedError{Transport: src.Transport, Remote: src.Remote}
		close(holder.kicked) // its writes are refused from now on: the stream goes on with p
		r.log.WithFields(logrus.Fields{"id": id, "old": holder.src.Remote, "new": src.Remote}).Info("a new connection took over the live id")
	}
	p := &Publisher{r: r, id: id, src: src, kicked: make(chan struct{})}
	r.claims[id] = p
	return p, nil
}

// ReplacedError is what a connection is told when another took over its
// live ID (Config.Takeover).
type ReplacedError struct{ Transport, Remote string }

func (e *ReplacedError) Error() string {
	return fmt.Sprintf("replaced by a new connection for this live id (%s from %s)", e.Transport, e.Remote)
}

// formatConflictLocked refuses src for id's live session if src names
// another input format (ErrFormat). Must hold mu.
func (r *Registry) formatConflictLocked(id string, src Source) error {
	s := r.sessions[id]
	if s == nil || src.Format == "" {
		return nil
	}
	cfg, err := r.cfg.forSource(src)
	if err != nil {
		return err
	}
	return formatConflict(s, src, cfg)
}

// formatConflict refuses src, whose ffmpeg would be cfg's, for s if it
// names another input format (ErrFormat).
func formatConflict(s *Session, src Source, cfg Config) error {
	if was, now := inputName(s.cfg.FFmpeg), inputName(cfg.FFmpeg); src.Format != "" && was != now {
		return fmt.Errorf("%w: it is streaming %s, not %s; end it first", ErrFormat, was, now)
	}
	return nil
}

// Write hands one piece of the stream to the session.
func (p *Publisher) Write(ctx context.Context, b []byte) (Result, error) {
	p.mu.Lock()
	src := p.src
	p.mu.Unlock()
	res, s, err := p.r.writeTo(ctx, p.id, &src, b, p)
	p.mu.Lock()
	p.src.Overrides, p.src.Approved = src.Overrides, src.Approved // spent once it started a stream
	if s != nil {
		p.last = s
	}
	p.mu.Unlock()
	return res, err
}

// Failure tells whether the session this publisher last wrote to ended
// because ffmpeg or the RTMP server failed: a connection that writes
// without waiting for the publish learns it here.
func (p *Publisher) Failure() error {
	p.mu.Lock()
	s := p.last
	p.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.Err()
}

// Detach releases the ID. With end, the stream ends now (the client said
// it is done); without, the session waits out its idle timeout so the
// client can reconnect and continue the same stream.
func (p *Publisher) Detach(end bool) {
	r := p.r
	r.mu.Lock()
	if r.claims[p.id] == p {
		delete(r.claims, p.id)
	}
	s := r.sessions[p.id]
	r.mu.Unlock()
	switch {
	case s == nil || isClosed(p.kicked): // once kicked, the ID's session is another client's
	case end:
		s.requestEnd(CauseClient, "ended by the client")
	case s.unfed():
		s.requestEnd(CauseClient, "the connection left before its first audio")
	}
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
