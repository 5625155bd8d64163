package session

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

func TestKickRemovesThePublisher(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
	pub, err := r.Attach("k", Source{Transport: "websocket", Remote: "192.0.2.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Write(context.Background(), frames(hdrV2Mono, 5, 1)); err != nil {
		t.Fatal(err)
	}
	if !r.Kick("k", time.Time{}) {
		t.Fatal("Kick found nothing")
	}
	select {
	case <-pub.Kicked():
	default:
		t.Fatal("the publisher was not told")
	}
	// Its next message starts nothing.
	if _, err := pub.Write(context.Background(), frames(hdrV2Mono, 5, 2)); !errors.Is(err, ErrKicked) {
		t.Fatalf("write after the kick: %v, want ErrKicked", err)
	}
	waitFor(t, "the session to end", func() bool { _, ok := r.Info("k"); return !ok })
	// Without a block the ID is free; the kicked connection's late
	// Detach(end) leaves the new client's stream alone.
	if _, err := r.Write(context.Background(), "k", testSrc, frames(hdrV2Mono, 5, 3)); err != nil {
		t.Fatalf("a new client after the kick: %v", err)
	}
	pub.Detach(true)
	if info, _ := r.Info("k"); info.EndReason != "" {
		t.Errorf("the kicked publisher's Detach ended the next stream: %q", info.EndReason)
	}
	if r.Kick("nothing", time.Time{}) {
		t.Error("Kick of an unknown ID reported a stream")
	}
	closeRegistry(t, r)
	if got := received(t, dir, "k"); len(got) != 2 {
		t.Errorf("%d ffmpeg runs, want 2 (the kicked stream and the new client's)", len(got))
	}
}

func TestKickWithBlockRefusesTheID(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, nil)
	if _, err := r.Write(context.Background(), "b", testSrc, frames(hdrV2Mono, 5, 1)); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	r.Kick("b", until)
	var be *BlockedError
	if _, err := r.Write(context.Background(), "b", testSrc, frames(hdrV2Mono, 5, 1)); !errors.As(err, &be) || !be.Until.Equal(until) {
		t.Errorf("write to a blocked ID: %v", err)
	}
	if _, err := r.Attach("b", testSrc); !errors.As(err, &be) {
		t.Errorf("attach to a blocked ID: %v", err)
	}
	if _, err := r.WriteSeq(context.Background(), "b", testSrc, SeqChunk{Seq: 0}, frames(hdrV2Mono, 5, 1)); !errors.As(err, &be) {
		t.Errorf("numbered write to a blocked ID: %v", err)
	}
	// A block ends by itself.
	r.Kick("short", time.Now().Add(50*time.Millisecond))
	if _, err := r.Write(context.Background(), "short", testSrc, frames(hdrV2Mono, 5, 1)); !errors.As(err, &be) {
		t.Fatalf("write to a blocked ID: %v", err)
	}
	waitFor(t, "the block to expire", func() bool {
		_, err := r.Write(context.Background(), "short", testSrc, frames(hdrV2Mono, 5, 1))
		return err == nil
	})
}

// An ending session's ffmpeg still runs: -max-sessions counts it until it
// has exited.
func TestMaxSessionsCountsEndingSessions(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.IgnoreInt, func(c *Config) { c.MaxSessions = 1 })
	if _, err := r.Write(context.Background(), "one", testSrc, frames(hdrV2Mono, 5, 1)); err != nil {
		t.Fatal(err)
	}
	one := pidOf(t, r, "one")
	r.End("one", CauseClient)
	waitFor(t, "the session to leave the list", func() bool { return r.Len() == 0 })
	if _, err := r.Write(context.Background(), "two", testSrc, frames(hdrV2Mono, 5, 1)); !errors.Is(err, ErrAtCapacity) {
		t.Fatalf("a new stream while the ending one's ffmpeg runs: %v, want ErrAtCapacity", err)
	}
	syscall.Kill(one, syscall.SIGKILL)
	waitFor(t, "room once that ffmpeg is gone", func() bool {
		_, err := r.Write(context.Background(), "two", testSrc, frames(hdrV2Mono, 5, 1))
		return err == nil
	})
	two := pidOf(t, r, "two")
	r.End("two", CauseClient)
	syscall.Kill(two, syscall.SIGKILL) // it would wait out the flush grace
}

// While the server drains, an ffmpeg ended by a signal from outside (as
// systemd's KillMode=control-group does to every process of the unit)
// ends its stream: no second ffmpeg, no second publish, and the ID gets no
// new session on this server. New IDs are still served.
func TestOutsideSignalWhileDrainingEndsTheStream(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, nil)
	if _, err := r.Write(context.Background(), "x", testSrc, frames(hdrV2Mono, 5, 1)); err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, r, "x")
	r.Drain()
	syscall.Kill(pid, syscall.SIGTERM)
	waitFor(t, "the stream to end", func() bool { _, ok := r.Info("x"); return !ok })
	if _, err := r.Write(context.Background(), "x", testSrc, frames(hdrV2Mono, 5, 2)); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("write to the ended ID while draining: %v, want ErrShuttingDown", err)
	}
	if _, err := r.Write(context.Background(), "fresh", testSrc, frames(hdrV2Mono, 5, 2)); err != nil {
		t.Errorf("a new ID while draining: %v", err)
	}
	closeRegistry(t, r)
	if n := len(fakeffmpeg.OutputFiles(dir, "x")); n != 1 {
		t.Errorf("%d ffmpeg runs for x, want 1: it was started again", n)
	}
}

// With Takeover, a newcomer for a held ID takes it at its first write, and
// only from a quiet holder: never while the holder writes or has written
// within takeoverQuiet. The holder is told why and its writes are refused,
// the stream goes on in the same ffmpeg, and the holder's late
// Detach(end) leaves it alone. A newcomer with another format is refused
// and the holder keeps the ID; one that leaves before taking it leaves
// the stream alone.
func TestTakeoverReplacesAQuietHolder(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Takeover = true })
	ctx := context.Background()
	old, err := r.Attach("t", Source{Transport: "websocket", Remote: "192.0.2.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Write(ctx, frames(hdrV2Mono, 5, 1)); err != nil {
		t.Fatal(err)
	}
	pub, err := r.Attach("t", Source{Transport: "whip", Remote: "192.0.2.2:2"})
	if err != nil {
		t.Fatalf("the newcomer: %v", err)
	}
	if _, err := pub.Write(ctx, frames(hdrV2Mono, 5, 7)); !errors.Is(err, ErrBusy) {
		t.Fatalf("the newcomer's write while the holder has just written: %v, want ErrBusy", err)
	}
	leaver, err := r.Attach("t", Source{Transport: "websocket", Remote: "192.0.2.4:4"})
	if err != nil {
		t.Fatal(err)
	}
	leaver.Detach(true) // never took the ID: the holder's stream goes on
	old.writing.Add(1)  // a write in progress, however long: still busy
	old.lastWrite.Store(time.Now().Add(-time.Hour).UnixNano())
	if _, err := pub.Write(ctx, frames(hdrV2Mono, 5, 7)); !errors.Is(err, ErrBusy) {
		t.Fatalf("the newcomer's write while the holder writes: %v, want ErrBusy", err)
	}
	old.writing.Add(-1)
	other, _ := r.Attach("t", Source{Transport: "websocket", Remote: "192.0.2.3:3", Format: "webm"})
	if _, err := other.Write(ctx, []byte{0x1a, 0x45, 0xdf, 0xa3}); !errors.Is(err, ErrFormat) {
		t.Fatalf("a newcomer with another format: %v, want ErrFormat", err)
	}
	select {
	case <-old.Kicked():
		t.Fatal("a refused newcomer replaced the holder")
	default:
	}
	if _, err := pub.Write(ctx, frames(hdrV2Mono, 5, 2)); err != nil {
		t.Fatalf("the newcomer once the holder is quiet: %v", err)
	}
	var re *ReplacedError
	if !errors.As(old.KickReason(), &re) || re.Remote != "192.0.2.2:2" || !isClosed(old.kicked) {
		t.Fatalf("the holder's reason: %v", old.KickReason())
	}
	if _, err := old.Write(ctx, frames(hdrV2Mono, 5, 9)); !errors.As(err, &re) {
		t.Fatalf("the holder's write after the takeover: %v, want ReplacedError", err)
	}
	old.Detach(true)
	if info, ok := r.Info("t"); !ok || info.EndReason != "" {
		t.Fatalf("the replaced holder's Detach ended the stream: %+v", info)
	}
	pub.Detach(true)
	waitGone(t, r, "t")
	closeRegistry(t, r)
	if got := received(t, dir, "t"); len(got) != 1 || len(got[0]) != 10*144 {
		t.Fatalf("ffmpeg runs %d, want one with both connections' audio and nothing of the refused writes", len(got))
	}
}

// A quiet holder whose stream has ended (or never started) is replaced
// only once the newcomer's new stream is certain: a newcomer the
// application refuses leaves the holder connected. The newcomer that
// takes the ID gets its own second before it counts as quiet.
func TestTakeoverWaitsForTheNewStream(t *testing.T) {
	r, _ := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.Takeover = true })
	ctx := context.Background()
	old, err := r.Attach("n", Source{Transport: "websocket", Remote: "192.0.2.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	old.lastWrite.Store(time.Now().Add(-time.Hour).UnixNano()) // quiet, and no session
	refuse := errors.New("no ticket")
	denied, _ := r.Attach("n", Source{Transport: "websocket", Remote: "192.0.2.2:2",
		Approve: func(context.Context, bool) (*Overrides, error) { return nil, refuse }})
	if _, err := denied.Write(ctx, frames(hdrV2Mono, 5, 1)); !errors.Is(err, refuse) {
		t.Fatalf("a refused newcomer: %v", err)
	}
	if isClosed(old.kicked) {
		t.Fatal("a refused newcomer replaced the holder")
	}
	pub, _ := r.Attach("n", Source{Transport: "websocket", Remote: "192.0.2.3:3"})
	if _, err := pub.Write(ctx, frames(hdrV2Mono, 5, 2)); err != nil {
		t.Fatalf("an allowed newcomer: %v", err)
	}
	if !isClosed(old.kicked) {
		t.Fatal("the holder was not replaced")
	}
	third, _ := r.Attach("n", Source{Transport: "whip", Remote: "192.0.2.4:4"})
	if _, err := third.Write(ctx, frames(hdrV2Mono, 5, 3)); !errors.Is(err, ErrBusy) {
		t.Fatalf("a newcomer right after a takeover: %v, want ErrBusy", err)
	}
	pub.Detach(true)
	closeRegistry(t, r)
}
