package session

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"
)

// Ordered, idempotent legacy POSTs. A client that numbers its chunks (seq)
// can retry a POST whose reply it never saw: a chunk already written is
// acknowledged again and not written twice. What a number gets is decided
// by seqTracker (the README's table); writeSeq only waits for its turn.

// DefaultSeqWait bounds how long a chunk waits for a missing predecessor:
// a retried POST on a mobile network arrives within a second or two.
const DefaultSeqWait = 2 * time.Second

// MaxSeq is the largest chunk number: JavaScript's Number.MAX_SAFE_INTEGER,
// the last one every client counts to exactly.
const MaxSeq = 1<<53 - 1

// seqWindow is how many of the last numbers a session remembers, with the
// written chunks' digests: far more than a client has in flight.
const seqWindow = 64

// seqOldRecs is how many replaced recording ids a session remembers, so a
// late chunk of one of them is refused rather than taken for a new one.
const seqOldRecs = 4

var (
	// ErrSeqLate is a numbered chunk the server cannot tell from one it
	// has written or given up on: refused, never written twice.
	ErrSeqLate = errors.New("this chunk arrived after the stream went on without it")
	// ErrSeqConflict is a chunk whose number, in the recording it names,
	// was already written with other bytes.
	ErrSeqConflict = errors.New("this seq was already written with other bytes in the same recording")
	// ErrSeqRange is a number no client counts to exactly.
	ErrSeqRange = fmt.Errorf("seq must be a whole number from 0 to %d", int64(MaxSeq))
)

// SeqChunk labels a numbered chunk.
type SeqChunk struct {
	Seq int64  // 0 to MaxSeq
	Rec string // the client's recording id; "" when it sends none
	End bool   // the client's last chunk: the stream ends once it is written
}

// SeqResult tells whether a numbered chunk was written now or before.
type SeqResult struct {
	Result
	Duplicate bool // already written: acknowledged again, not written twice
}

// seqKey is what identifies a chunk: its number, its recording and a
// digest of its bytes (a retry is byte-identical).
type seqKey struct {
	n   int64
	rec string
	sum uint64
}

func newSeqKey(c SeqChunk, p []byte) seqKey {
	h := fnv.New64a()
	h.Write(p)
	return seqKey{n: c.Seq, rec: c.Rec, sum: h.Sum64()}
}

// seqAction is what happens to a numbered chunk.
type seqAction int

const (
	seqWrite     seqAction = iota // the number expected next: write it
	seqNew                        // a new recording begins with it: start, then write
	seqAhead                      // a predecessor is missing: wait for it
	seqDuplicate                  // written before: acknowledge without writing
	seqLate                       // behind and not recognisable: refuse (ErrSeqLate)
	seqConflict                   // same recording and number, other bytes: refuse
)

var seqActionNames = [...]string{"write", "new", "ahead", "duplicate", "late", "conflict"}

func (a seqAction) String() string { return seqActionNames[a] }

const (
	slotEmpty uint8 = iota
	slotWritten
	slotSkipped
)

// seqSlot is what became of one number of the window.
type seqSlot struct {
	n     int64
	state uint8
	sum   uint64 // the written chunk's digest
}

// seqTracker is a stream's numbering: the number expected next and what
// became of the last seqWindow numbers. It decides; it does not wait.
type seqTracker struct {
	on      bool
	gen     uint64 // counts recordings: a chunk waiting for an older one is late
	rec     string // the current recording's id ("" if the client sends none)
	old     [seqOldRecs]string
	next    int64
	zero    uint64 // the digest of chunk 0 of this recording, if hasZero
	hasZero bool
	broken  bool               // the number expected next does not follow a written one: a gap, a new recording
	slots   [seqWindow]seqSlot // indexed by number mod seqWindow
}

// decide tells what chunk c gets. Numbers are 0 to MaxSeq.
func (t *seqTracker) decide(c seqKey) seqAction {
	switch {
	case !t.on:
		return seqNew
	case c.rec != "" && c.rec != t.rec:
		if t.replaced(c.rec) {
			return seqLate
		}
		return seqNew
	case c.n == t.next:
		return seqWrite
	case c.n > t.next:
		return seqAhead
	}
	// Behind: a retry if its bytes are those written under its number.
	named := c.rec != "" // the client said it is this recording
	if sl := t.slot(c.n); sl != nil {
		switch {
		case sl.state == slotSkipped:
			return seqLate
		case sl.sum == c.sum:
			return seqDuplicate
		case named:
			return seqConflict
		}
		return seqNew // other bytes under a recent number: the recorder restarted
	}
	if c.n == 0 {
		switch {
		case t.hasZero && t.zero == c.sum:
			return seqDuplicate
		case named && t.hasZero:
			return seqConflict
		case !named:
			return seqNew // numbering from 0 again: a new recording
		}
	}
	return seqLate // too far behind to be checked
}

// start begins a recording with chunk c, which is expected next.
func (t *seqTracker) start(c seqKey) {
	if t.on && t.rec != "" && t.rec != c.rec {
		copy(t.old[1:], t.old[:])
		t.old[0] = t.rec
	}
	t.on = true
	t.gen++
	t.rec = c.rec
	t.next = c.n
	t.hasZero = false
	t.broken = true
	t.slots = [seqWindow]seqSlot{}
}

// written records that c, the chunk expected next, was written.
func (t *seqTracker) written(c seqKey) {
	t.slots[c.n%seqWindow] = seqSlot{n: c.n, state: slotWritten, sum: c.sum}
	if c.n == 0 {
		t.zero, t.hasZero = c.sum, true
	}
	t.next = c.n + 1
	t.broken = false
}

// skipTo gives up on the numbers from next up to n.
func (t *seqTracker) skipTo(n int64) {
	for k := max(t.next, n-seqWindow); k < n; k++ {
		t.slots[k%seqWindow] = seqSlot{n: k, state: slotSkipped}
	}
	t.next = n
	t.broken = true
}

// slot returns what became of number n, or nil if n is out of the window
// or was never reached in this recording.
func (t *seqTracker) slot(n int64) *seqSlot {
	sl := &t.slots[n%seqWindow]
	if sl.state == slotEmpty || sl.n != n {
		return nil
	}
	return sl
}

func (t *seqTracker) replaced(rec string) bool {
	for _, r := range t.old {
		if r == rec {
			return true
		}
	}
	return false
}

// seqState is a session's numbering. Guarded by Session.mu.
type seqState struct {
	t       seqTracker
	busy    bool          // the chunk numbered t.next is being written
	waiters int           // chunks waiting for their turn
	changed chan struct{} // closed and replaced when t or busy changes
}

// writeSeq writes chunk c (bytes p) in order.
func (s *Session) writeSeq(ctx context.Context, src Source, c seqKey, p []byte) (SeqResult, error) {
	timer := time.NewTimer(s.cfg.SeqWait)
	defer timer.Stop()
	expire, expired := timer.C, false // expire is nil once it fired
	var aheadOf uint64                // the recording c waits in, once it waits for a predecessor
	for {
		s.mu.Lock()
		q := &s.seq
		if q.changed == nil {
			q.changed = make(chan struct{})
		}
		if aheadOf != 0 && q.t.gen != aheadOf {
			s.mu.Unlock()
			return SeqResult{}, fmt.Errorf("%w (seq %d: a new recording began while it waited)", ErrSeqLate, c.n)
		}
		act := q.t.decide(c)
		switch {
		case act == seqDuplicate:
			s.mu.Unlock()
			return SeqResult{Duplicate: true}, nil
		case act == seqLate:
			s.mu.Unlock()
			return SeqResult{}, fmt.Errorf("%w (seq %d, expected %d)", ErrSeqLate, c.n, q.t.next)
		case act == seqConflict:
			s.mu.Unlock()
			return SeqResult{}, fmt.Errorf("%w (seq %d)", ErrSeqConflict, c.n)
		case (act == seqWrite || act == seqNew) && !q.busy:
			if act == seqNew {
				if q.t.on {
					s.log.WithFields(map[string]any{"seq": c.n, "expected": q.t.next, "rec": c.rec}).Info("the client started a new recording")
				}
				q.t.start(c)
			}
			q.busy = true
			fresh := q.t.broken
			s.mu.Unlock()
			res, err := s.write(ctx, src, p, true, fresh)
			s.mu.Lock()
			q.busy = false
			if err == nil {
				q.t.written(c)
			}
			s.seqChangedLocked()
			s.mu.Unlock()
			return SeqResult{Result: res}, err
		case act == seqAhead && !q.busy && expired:
			s.log.WithFields(map[string]any{"seq": c.n, "missing_from": q.t.next}).Warnf("chunks missing after %s; going on without them", s.cfg.SeqWait)
			q.t.skipTo(c.n)
			s.seqChangedLocked()
			s.mu.Unlock()
			continue
		case act == seqAhead && aheadOf == 0:
			aheadOf = q.t.gen
		}
		changed := q.changed
		q.waiters++
		s.mu.Unlock()
		var err error
		select {
		case <-changed:
		case <-expire:
			expire, expired = nil, true
		case <-ctx.Done():
			err = ctx.Err()
		case <-s.endReq:
			err = errEnded
		}
		s.mu.Lock()
		q.waiters--
		s.mu.Unlock()
		if err != nil {
			return SeqResult{}, err
		}
	}
}

// seqChangedLocked wakes the chunks waiting for their turn. Must hold mu.
func (s *Session) seqChangedLocked() {
	close(s.seq.changed)
	s.seq.changed = make(chan struct{})
}
