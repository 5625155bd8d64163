package session

import (
	"bytes"
	"context"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

var pcmMono = Source{Transport: "test", Format: "pcm", Rate: 16000, Channels: 1}

// A byte of a sample frame left over by the chunk before a seq gap or a
// recorder restart is dropped: the chunk after begins on a frame of its
// own, and every sample after it stays aligned.
func TestPCMCarryDroppedAtAGapOrANewRecording(t *testing.T) {
	type chunk struct {
		seq  int64
		rec  string
		data []byte
	}
	odd, next := []byte{1, 2, 3}, []byte{0xa, 0xb, 0xc, 0xd}
	for _, tc := range []struct {
		name   string
		chunks []chunk
	}{
		{"a gap", []chunk{{0, "", odd}, {2, "", next}}}, // seq 1 never comes
		{"a restart from 0", []chunk{{0, "", []byte{9, 9}}, {1, "", odd}, {0, "", next}}},
		{"a new rec", []chunk{{0, "a", odd}, {0, "b", next}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.SeqWait = 50 * time.Millisecond })
			var want []byte
			for _, c := range tc.chunks {
				if _, err := r.WriteSeq(context.Background(), "p", pcmMono, SeqChunk{Seq: c.seq, Rec: c.rec}, c.data); err != nil {
					t.Fatalf("seq %d: %v", c.seq, err)
				}
				want = append(want, c.data[:len(c.data)&^1]...)
			}
			closeRegistry(t, r)
			wantOneRun(t, dir, "p", want)
		})
	}
}

// A write that drops the carry and is then refused leaves the carry as it
// was: the next write is cut exactly as if the refused one never came.
func TestPCMDropCarryRollsBack(t *testing.T) {
	m := newPCMUnits(48000, 2)
	m.feed([]byte{1, 2, 3})
	m.mark()
	m.dropCarry()
	if us, _ := m.feed([]byte{4, 5, 6, 7}); len(us) != 1 || !bytes.Equal(us[0].data, []byte{4, 5, 6, 7}) || m.carried != 0 {
		t.Fatalf("after the drop: %v, carry % x", us, m.carry[:m.carried])
	}
	m.rollback()
	if us, _ := m.feed([]byte{4, 5, 6, 7, 8}); len(us) != 1 || !bytes.Equal(us[0].data, []byte{1, 2, 3, 4, 5, 6, 7, 8}) || m.carried != 0 {
		t.Fatalf("after the rollback: %v, carry % x", us, m.carry[:m.carried])
	}
}
