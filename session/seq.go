package session

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Ordered, idempotent legacy POSTs. A client that numbers its chunks (seq)
// can retry a POST whose reply it never saw: a chunk already written is
// acknowledged again and not written twice. A chunk that arrives before
// its predecessor waits for it, up to SeqWait; then the stream goes on
// without the missing one, which is refused if it turns up later.

// DefaultSeqWait bounds how long a chunk waits for a missing predecessor:
// a retried POST on a mobile network arrives within a second or two.
const DefaultSeqWait = 2 * time.Second

// seqRestart: a number this far behind the expected one is not a late
// retry but a client that started counting again (a new recorder).
const seqRestart = 64

// ErrSeqLate is a numbered chunk that arrives after the stream went on
// without it.
var ErrSeqLate = errors.New("this chunk arrived after the stream went on without it")

// seqState is a session's numbering. Guarded by Session.mu.
type seqState struct {
	on      bool
	next    int64          // the number expected next
	busy    bool           // the chunk numbered next is being written
	skipped map[int64]bool // numbers given up on, for ErrSeqLate
	changed chan struct{}  // closed and replaced when next or busy changes
}

// SeqResult tells whether a numbered chunk was written now or before.
type SeqResult struct {
	Result
	Duplicate bool // already written: acknowledged again, not written twice
}

// writeSeq writes chunk number n in order.
func (s *Session) writeSeq(ctx context.Context, src Source, n int64, p []byte) (SeqResult, error) {
	wait := s.cfg.SeqWait
	deadline := time.Now().Add(wait)
	for {
		s.mu.Lock()
		q := &s.seq
		if q.changed == nil {
			q.changed = make(chan struct{})
			q.skipped = map[int64]bool{}
		}
		if !q.on || n < q.next-seqRestart {
			if q.on {
				s.log.WithFields(map[string]any{"seq": n, "expected": q.next}).Info("the client started numbering again")
			}
			q.on, q.next = true, n
			clear(q.skipped)
		}
		switch {
		case n < q.next:
			late := q.skipped[n]
			s.mu.Unlock()
			if late {
				return SeqResult{}, fmt.Errorf("%w (seq %d)", ErrSeqLate, n)
			}
			return SeqResult{Duplicate: true}, nil
		case n == q.next && !q.busy:
			q.busy = true
			s.mu.Unlock()
			res, err := s.write(ctx, src, p, true)
			s.mu.Lock()
			q.busy = false
			if err == nil {
				q.next = n + 1
				for k := range q.skipped {
					if k < q.next-seqRestart {
						delete(q.skipped, k)
					}
				}
			}
			s.seqChangedLocked()
			s.mu.Unlock()
			return SeqResult{Result: res}, err
		case n > q.next && !q.busy && !time.Now().Before(deadline):
			s.log.WithFields(map[string]any{"seq": n, "missing_from": q.next}).Warnf("chunks missing after %s; going on without them", wait)
			for k := q.next; k < n && k < q.next+seqRestart; k++ {
				q.skipped[k] = true
			}
			q.next = n
			s.seqChangedLocked()
			s.mu.Unlock()
			continue
		}
		changed := q.changed
		s.mu.Unlock()
		var expire <-chan time.Time // nil once the deadline passed: wait for the writer
		if d := time.Until(deadline); d > 0 {
			timer := time.NewTimer(d)
			defer timer.Stop()
			expire = timer.C
		}
		select {
		case <-changed:
		case <-expire:
		case <-ctx.Done():
			return SeqResult{}, ctx.Err()
		case <-s.endReq:
			return SeqResult{}, errEnded
		}
	}
}

// seqChangedLocked wakes the chunks waiting for their turn. Must hold mu.
func (s *Session) seqChangedLocked() {
	close(s.seq.changed)
	s.seq.changed = make(chan struct{})
}
