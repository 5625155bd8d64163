package session

import "time"

// A client that ends its stream with end=1 and loses the reply sends the
// same POST again, after the session is gone. The registry keeps an ended
// stream's numbering for the idle timeout, so that retry (or a late retry
// of any of its last chunks) is acknowledged as a duplicate instead of
// opening a new publish with audio already published.

// endedSeqs remembers the numbering of streams their clients ended, until
// each expires. Guarded by Registry.mu.
type endedSeqs struct {
	byID  map[string]*endedSeq
	queue []*endedSeq // in order of expiry: the TTL is the same for all
}

type endedSeq struct {
	id      string
	t       seqTracker
	expires time.Time
}

// add remembers id's numbering t until expires, replacing what was kept.
func (e *endedSeqs) add(id string, t seqTracker, expires time.Time, now time.Time) {
	e.prune(now)
	if e.byID == nil {
		e.byID = make(map[string]*endedSeq)
	}
	x := &endedSeq{id: id, t: t, expires: expires}
	e.byID[id] = x
	e.queue = append(e.queue, x)
}

// duplicate tells whether c is a chunk id's ended stream already wrote.
func (e *endedSeqs) duplicate(id string, c seqKey, now time.Time) bool {
	e.prune(now)
	x := e.byID[id]
	return x != nil && x.t.decide(c) == seqDuplicate
}

// forget drops id's ended numbering: a new stream took the ID.
func (e *endedSeqs) forget(id string) { delete(e.byID, id) }

func (e *endedSeqs) prune(now time.Time) {
	for len(e.queue) > 0 && !now.Before(e.queue[0].expires) {
		x := e.queue[0]
		e.queue[0] = nil
		e.queue = e.queue[1:]
		if e.byID[x.id] == x {
			delete(e.byID, x.id)
		}
	}
}

// endedRetry tells whether c is a retry of a chunk of id's stream that its
// client ended, while no session holds the ID.
func (r *Registry) endedRetry(id string, c seqKey) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[id] == nil && r.ended.duplicate(id, c, time.Now())
}

// endSeq ends s at its client's request, remembering its numbering first.
func (r *Registry) endSeq(s *Session) {
	s.mu.Lock()
	t := s.seq.t
	s.mu.Unlock()
	now := time.Now()
	r.mu.Lock()
	r.ended.add(s.id, t, now.Add(r.cfg.IdleTimeout), now)
	r.mu.Unlock()
	s.requestEnd(CauseClient, "ended by the client")
}
