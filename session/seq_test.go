package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// k is chunk n of recording rec whose bytes digest to sum.
func k(n int64, sum uint64, rec ...string) seqKey {
	c := seqKey{n: n, sum: sum}
	if len(rec) > 0 {
		c.rec = rec[0]
	}
	return c
}

// run feeds chunks to t as writeSeq would once every wait is over: a new
// recording starts, a missing predecessor is given up on, and the chunk is
// written; duplicates and refusals change nothing.
func run(t *seqTracker, chunks ...seqKey) {
	for _, c := range chunks {
		switch t.decide(c) {
		case seqNew:
			t.start(c)
		case seqAhead:
			t.skipTo(c.n)
		case seqWrite:
		default:
			continue
		}
		t.written(c)
	}
}

// numbered is chunks first..last of one recording, chunk i's digest i+add.
func numbered(first, last int64, add uint64, rec ...string) []seqKey {
	var out []seqKey
	for i := first; i <= last; i++ {
		out = append(out, k(i, uint64(i)+add, rec...))
	}
	return out
}

func TestSeqTrackerDecides(t *testing.T) {
	cases := []struct {
		name    string
		history []seqKey
		chunk   seqKey
		want    seqAction
	}{
		{"the first chunk of a stream", nil, k(7, 1), seqNew},
		{"the next number", numbered(0, 2, 0), k(3, 99), seqWrite},
		{"a predecessor missing", numbered(0, 1, 0), k(5, 5), seqAhead},
		{"a retry", numbered(0, 2, 0), k(1, 1), seqDuplicate},
		{"a retry of the last", numbered(0, 2, 0), k(2, 2), seqDuplicate},
		{"a recorder restart from 0", numbered(0, 9, 0), k(0, 1000), seqNew},
		{"a recorder restart from 1", numbered(1, 9, 0), k(1, 1000), seqNew},
		{"a restart whose chunk 0 has the old bytes", numbered(0, 9, 0), k(0, 0), seqDuplicate},
		{"the window's oldest", numbered(0, 64, 0), k(1, 1), seqDuplicate},
		{"just out of the window", numbered(0, 65, 0), k(1, 1), seqLate},
		{"far behind", numbered(0, 69, 0), k(2, 2), seqLate},
		{"far behind, other bytes", numbered(0, 69, 0), k(2, 1000), seqLate},
		{"chunk 0 retried far behind", numbered(0, 69, 0), k(0, 0), seqDuplicate},
		{"chunk 0 again far behind, other bytes", numbered(0, 69, 0), k(0, 1000), seqNew},
		{"given up on", []seqKey{k(0, 0), k(3, 3)}, k(1, 1), seqLate},
		{"given up on, last", []seqKey{k(0, 0), k(3, 3)}, k(2, 2), seqLate},
		{"given up on, chunk 0", []seqKey{k(1, 1)}, k(0, 0), seqNew},
		{"given up on, chunk 0 after a wait", []seqKey{k(0, 0), k(1, 1)}, k(0, 0), seqDuplicate},
		{"skipped to the largest number, retried", []seqKey{k(0, 0), k(MaxSeq, 5)}, k(MaxSeq, 5), seqDuplicate},
		{"skipped to the largest number, one before", []seqKey{k(0, 0), k(MaxSeq, 5)}, k(MaxSeq-1, 5), seqLate},
		{"after the largest number", []seqKey{k(MaxSeq, 5)}, k(0, 6), seqNew},
		{"before this server's first (taken over mid-stream)", numbered(57, 58, 0), k(50, 50), seqLate},
		{"0 before this server's first", numbered(57, 58, 0), k(0, 0), seqNew},
		{"rec: a new recording with the old bytes", numbered(0, 2, 0, "a"), k(0, 0, "b"), seqNew},
		{"rec: a retry", numbered(0, 2, 0, "a"), k(1, 1, "a"), seqDuplicate},
		{"rec: other bytes, same number", numbered(0, 2, 0, "a"), k(1, 9, "a"), seqConflict},
		{"rec: chunk 0 far behind, other bytes", numbered(0, 69, 0, "a"), k(0, 9, "a"), seqConflict},
		{"rec: chunk 0 before the first", numbered(5, 6, 0, "a"), k(0, 9, "a"), seqLate},
		{"rec: a replaced recording's late chunk", append(numbered(0, 2, 0, "a"), k(0, 0, "b")), k(2, 2, "a"), seqLate},
		{"rec: after the first named one", numbered(0, 2, 0), k(3, 3, "a"), seqNew},
		{"rec: a chunk that names none", numbered(0, 2, 0, "a"), k(1, 1), seqDuplicate},
		{"rec: a chunk that names none, other bytes", numbered(0, 2, 0, "a"), k(1, 9), seqNew},
		{"rec: the oldest remembered", recordings("a", "b", "c", "d", "e"), k(0, 0, "a"), seqLate},
		{"rec: older than remembered", recordings("a", "b", "c", "d", "e", "f"), k(0, 0, "a"), seqNew},
	}
	for _, tc := range cases {
		var tr seqTracker
		run(&tr, tc.history...)
		if got := tr.decide(tc.chunk); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// recordings is chunk 0 of each named recording, in turn.
func recordings(recs ...string) []seqKey {
	var out []seqKey
	for _, r := range recs {
		out = append(out, k(0, 0, r))
	}
	return out
}

func TestSeqTrackerCountsWithoutOverflow(t *testing.T) {
	var tr seqTracker
	run(&tr, k(MaxSeq-1, 1), k(MaxSeq, 2))
	if tr.next != MaxSeq+1 || tr.next < 0 {
		t.Fatalf("next = %d after the largest number", tr.next)
	}
	if got := tr.decide(k(MaxSeq, 2)); got != seqDuplicate {
		t.Fatalf("the largest number retried: %s", got)
	}
}

func TestEndedSeqsRemembersUntilExpiry(t *testing.T) {
	var tr seqTracker
	run(&tr, numbered(0, 3, 0)...)
	var e endedSeqs
	t0 := time.Unix(1000, 0)
	e.add("a", tr, t0.Add(30*time.Second), t0)
	if !e.duplicate("a", k(3, 3), t0) || !e.duplicate("a", k(1, 1), t0) {
		t.Fatal("a retry of an ended stream's chunk is not a duplicate")
	}
	for _, c := range []seqKey{k(3, 9), k(4, 4), k(0, 9)} {
		if e.duplicate("a", c, t0) {
			t.Fatalf("%+v is taken for a retry", c)
		}
	}
	if e.duplicate("b", k(3, 3), t0) {
		t.Fatal("another ID's chunk is taken for a retry")
	}
	e.add("b", tr, t0.Add(40*time.Second), t0.Add(10*time.Second))
	if e.duplicate("a", k(3, 3), t0.Add(30*time.Second)) {
		t.Fatal("remembered after expiry")
	}
	if !e.duplicate("b", k(3, 3), t0.Add(30*time.Second)) {
		t.Fatal("b forgotten with a")
	}
	e.forget("b")
	if e.duplicate("b", k(3, 3), t0.Add(30*time.Second)) {
		t.Fatal("remembered after forget")
	}
	e.prune(t0.Add(time.Hour))
	if len(e.byID) != 0 || len(e.queue) != 0 {
		t.Fatalf("left after expiry: %d, %d", len(e.byID), len(e.queue))
	}
}

func TestSeqWaiterOfAReplacedRecordingIsLate(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.SeqWait = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	write := func(n int64, fill byte) (SeqResult, error) {
		return r.WriteSeq(ctx, "w", testSrc, SeqChunk{Seq: n}, frames(hdrV2Mono, 2, fill))
	}
	for i := int64(0); i < 5; i++ {
		if _, err := write(i, byte(i+1)); err != nil {
			t.Fatalf("seq %d: %v", i, err)
		}
	}
	waiter := make(chan error, 1)
	go func() { _, err := write(7, 8); waiter <- err }() // 5 and 6 never come
	waitFor(t, "seq 7 to wait for 5", func() bool { return waiting(r, "w") })
	// The recorder restarts: 7 belonged to the recording it replaced.
	if _, err := write(0, 20); err != nil {
		t.Fatalf("new recording's seq 0: %v", err)
	}
	if err := <-waiter; !errors.Is(err, ErrSeqLate) {
		t.Fatalf("the old recording's waiting chunk: %v", err)
	}
	if _, err := write(1, 21); err != nil {
		t.Fatalf("new recording's seq 1: %v", err)
	}
	closeRegistry(t, r)
	var want []byte
	for _, f := range []byte{1, 2, 3, 4, 5, 20, 21} {
		want = append(want, frames(hdrV2Mono, 2, f)...)
	}
	wantOneRun(t, dir, "w", want)
}

// waiting tells whether a numbered chunk of id waits for its turn: its
// session's numbering has a waiter registered on changed.
func waiting(r *Registry, id string) bool {
	r.mu.Lock()
	s := r.sessions[id]
	r.mu.Unlock()
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq.t.next == 5 && s.seq.waiters > 0
}
