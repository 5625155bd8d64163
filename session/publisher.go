package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Publisher is a connection that holds a live ID for as long as it is
// attached: no other connection or POST may write to that ID meanwhile.
// With Config.Takeover a newer connection may take the ID from a quiet
// holder (claimLocked).
type Publisher struct {
	r   *Registry
	id  string
	src Source

	// kicked is closed (under the registry's mu) when the operator, the
	// application or a newer connection removed this publisher; why is
	// set before, nil for the operator.
	kicked chan struct{}
	why    error
	// held: the publisher took the claim on its ID (guarded by the
	// registry's mu). A newcomer attached beside a holder has not.
	held bool

	writing   atomic.Int32 // writes in progress
	lastWrite atomic.Int64 // when the latest write ended (or Attach), Unix ns

	mu   sync.Mutex // guards last and src's approval
	last *Session   // the session this publisher last wrote to
}

// takeoverQuiet: a holder is replaced only once it has delivered nothing
// for this long, as long as gap fill waits before calling a client quiet.
// A connection that streams is never taken over; one that vanished is.
const takeoverQuiet = time.Second

// ErrKicked refuses the writes of a publisher the operator removed
// (DELETE /streams/ID): its connection is being closed.
var ErrKicked = errors.New("ended by the operator")

// ReplacedError is what a connection is told when a newer one took over
// its live ID (Config.Takeover).
type ReplacedError struct{ Transport, Remote string }

func (e *ReplacedError) Error() string {
	return fmt.Sprintf("replaced by a new connection for this live id (%s from %s)", e.Transport, e.Remote)
}

// Kicked is closed when this publisher was removed (Kick, Stream.Revoke,
// a takeover): its connection should close. A nil Publisher is never
// kicked.
func (p *Publisher) Kicked() <-chan struct{} {
	if p == nil {
		return nil
	}
	return p.kicked
}

// KickReason is what the connection is told once Kicked is closed:
// ErrKicked, the application's reason (Stream.Revoke) or a ReplacedError.
func (p *Publisher) KickReason() error {
	if p.why != nil {
		return p.why
	}
	return ErrKicked
}

// Attach claims id for one connection. src describes it in logs and in
// the refusal another client gets (ErrBusy). With Config.Takeover, an ID
// held by another connection is not refused here: the newcomer takes it
// at its first write (or Reserve, Prestart) if the holder is quiet then.
func (r *Registry) Attach(id string, src Source) (*Publisher, error) {
	if !ValidID(id) {
		return nil, ErrInvalidID
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.refusedLocked(id); err != nil {
		return nil, err
	}
	p := &Publisher{r: r, id: id, src: src, kicked: make(chan struct{})}
	p.lastWrite.Store(time.Now().UnixNano())
	if holder := r.claims[id]; holder != nil {
		if !r.cfg.Takeover {
			return nil, busy(holder)
		}
		return p, nil
	}
	r.claims[id] = p
	p.held = true
	return p, nil
}

func busy(holder *Publisher) error {
	return fmt.Errorf("%w (%s from %s)", ErrBusy, holder.src.Transport, holder.src.Remote)
}

// claimLocked checks that pub (nil for a POST) may use id, whose ffmpeg
// would be cfg's: a POST is refused while a connection holds the ID; a
// newcomer may replace a holder that has been quiet for takeoverQuiet, as
// the application approves (errApprove first) and in the live stream's
// format; a holder's in-flight write keeps it busy, so none of its audio
// lands after the newcomer's. It returns the holder to replace, which
// takeLocked does once the newcomer's stream is certain. Must hold mu.
func (r *Registry) claimLocked(id string, pub *Publisher, src *Source, cfg Config) (*Publisher, error) {
	holder := r.claims[id]
	if holder == nil || holder == pub {
		return nil, nil
	}
	if pub == nil || !holder.quiet() {
		return nil, busy(holder)
	}
	if s := r.sessions[id]; s != nil {
		if err := formatConflict(s, *src, cfg); err != nil {
			return nil, err // the holder keeps a stream the newcomer could not continue
		}
		if src.Approve != nil && !src.Approved {
			src.takeover = true
			return nil, errApprove // asked as a new stream would be: keys alone do not take a live stream
		}
	}
	return holder, nil
}

// takeLocked gives id's claim to pub (nil: a POST, which takes none),
// replacing holder if claimLocked named one. Must hold mu.
func (r *Registry) takeLocked(id string, pub, holder *Publisher, src *Source) {
	if holder != nil {
		src.Overrides, src.Approved = nil, false // spent on the takeover
		holder.why = &ReplacedError{Transport: src.Transport, Remote: src.Remote}
		close(holder.kicked) // its writes are refused from now on
		r.log.WithFields(logrus.Fields{"id": id, "old": holder.src.Remote, "new": src.Remote}).Info("a new connection took over the live id from a quiet one")
	}
	if pub != nil && r.claims[id] != pub {
		r.claims[id], pub.held = pub, true
		pub.lastWrite.Store(time.Now().UnixNano()) // a new holder gets its own second before it counts as quiet
	}
}

// quiet: no write in progress and none for takeoverQuiet.
func (p *Publisher) quiet() bool {
	return p.writing.Load() == 0 && time.Since(time.Unix(0, p.lastWrite.Load())) >= takeoverQuiet
}

// Write hands one piece of the stream to the session.
func (p *Publisher) Write(ctx context.Context, b []byte) (Result, error) {
	p.writing.Add(1) // before acquire: a takeover either sees it or refuses it (mu orders them)
	defer func() {
		p.lastWrite.Store(time.Now().UnixNano())
		p.writing.Add(-1)
	}()
	src := p.source()
	res, s, err := p.r.writeTo(ctx, p.id, &src, b, p)
	p.settle(src, s)
	return res, err
}

// source is a copy of p's Source, for one write or open.
func (p *Publisher) source() Source {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.src
}

// settle keeps what a write or open did with src's approval (spent once
// it started or took a stream) and the session it reached, if any.
func (p *Publisher) settle(src Source, s *Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.src.Overrides, p.src.Approved = src.Overrides, src.Approved
	if s != nil {
		p.last = s
	}
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
// client can reconnect and continue the same stream. A publisher that
// never took the ID, or lost it, leaves the stream alone.
func (p *Publisher) Detach(end bool) {
	r := p.r
	r.mu.Lock()
	if r.claims[p.id] == p {
		delete(r.claims, p.id)
	}
	held := p.held
	s := r.sessions[p.id]
	r.mu.Unlock()
	switch {
	case s == nil || !held || isClosed(p.kicked): // once kicked, the ID's session is another client's
	case end:
		s.requestEnd(CauseClient, "ended by the client")
	case s.unfed():
		s.requestEnd(CauseClient, "the connection left before its first audio")
	}
}

// formatConflict refuses src, whose ffmpeg would be cfg's, for s if it
// names another input format (ErrFormat).
func formatConflict(s *Session, src Source, cfg Config) error {
	if was, now := inputName(s.cfg.FFmpeg), inputName(cfg.FFmpeg); src.Format != "" && was != now {
		return fmt.Errorf("%w: it is streaming %s, not %s; end it first", ErrFormat, was, now)
	}
	return nil
}
