package session

import (
	"context"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// A stream is superseded once a newer session holds its ID, not while it
// holds it or the ID is free.
func TestStreamSuperseded(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, nil)
	write := func() Stream {
		t.Helper()
		if _, err := r.Write(context.Background(), "w", testSrc, frames(hdrV2Mono, 2, 1)); err != nil {
			t.Fatal(err)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return Stream{r: r, s: r.sessions["w"]}
	}
	first := write()
	if first.Superseded() {
		t.Fatal("the live stream is superseded")
	}
	r.End("w", CauseClient)
	waitGone(t, r, "w")
	if first.Superseded() {
		t.Fatal("the ended stream is superseded while the ID is free")
	}
	second := write()
	if !first.Superseded() || second.Superseded() {
		t.Fatalf("with a new stream: first superseded %v, second %v", first.Superseded(), second.Superseded())
	}
}
