package session

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// The model test: a seeded random client against the real session code and
// the fake ffmpeg, which "sends" only what it has held for LagBehind (so a
// kill loses what it had read), checked against the invariant: every
// acknowledged frame is published, in order; a frame is published twice
// only at the start of an ffmpeg that followed a failed one, within the
// pre-roll and replay window. MODEL_SEED reproduces a run's operations,
// MODEL_OPS sets their number.

// modelFrame is frame number n in the format of hdr: its side information
// says its main data starts `reservoir` bytes back, and its payload carries
// n in 7-bit bytes, never a sync byte.
func modelFrame(hdr []byte, n uint32, reservoir byte) []byte {
	h := mustParse(hdr)
	f := frame(hdr, 0x11)
	side := f[4 : 4+h.sideInfoLen()]
	clear(side)
	side[0] = reservoir
	id := f[4+h.sideInfoLen():]
	id[0], id[1], id[2], id[3] = 0x55, byte(n>>21)&0x7F, byte(n>>14)&0x7F, byte(n>>7)&0x7F
	id[4] = byte(n) & 0x7F
	return f
}

// frameNumber reads modelFrame's number back; ok is false for gap fill's
// silence and anything else.
func frameNumber(f []byte) (uint32, bool) {
	h, ok := parseHeader(f)
	if !ok || len(f) < 4+h.sideInfoLen()+5 {
		return 0, false
	}
	id := f[4+h.sideInfoLen():]
	if id[0] != 0x55 {
		return 0, false
	}
	return uint32(id[1])<<21 | uint32(id[2])<<14 | uint32(id[3])<<7 | uint32(id[4]), true
}

type modelStream struct {
	id    string
	bytes []byte // the client's byte stream
	ends  []int  // ends[n]: where frame n ends in bytes
	acked int    // bytes acknowledged
	sent  int    // bytes handed to Write (acked, or refused and to be retried)
	hdr   []byte // format of the next frame
	next  uint32 // number of the next frame
	rng   *rand.Rand
	// A numbered stream (seq) sends chunk seq = len(chunks) next; chunks
	// hold the acknowledged ones, for retries of a lost reply.
	numbered bool
	seqBase  int    // chunks before it belong to earlier recordings
	holeFrom uint32 // frames from it on follow a skipped chunk: unchecked (0: none)
	chunks   [][]byte
}

// writeSeq sends the pending bytes as the next numbered chunk.
func (m *modelStream) writeSeq(r *Registry, p []byte) (SeqResult, error) {
	return r.WriteSeq(context.Background(), m.id, testSrc, SeqChunk{Seq: int64(len(m.chunks) - m.seqBase)}, p)
}

func (m *modelStream) addFrames(n int) {
	for i := 0; i < n; i++ {
		m.bytes = append(m.bytes, modelFrame(m.hdr, m.next, byte(m.rng.IntN(120)))...)
		m.ends = append(m.ends, len(m.bytes))
		m.next++
	}
}

func TestModelDeliversEveryAcknowledgedFrame(t *testing.T) {
	if testing.Short() {
		t.Skip("the model test runs thousands of operations against real processes")
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("MODEL_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	ops := 10000
	if v := os.Getenv("MODEL_OPS"); v != "" {
		ops, _ = strconv.Atoi(v)
	}
	t.Logf("MODEL_SEED=%d MODEL_OPS=%d", seed, ops)
	defer func() {
		if t.Failed() {
			t.Logf("reproduce with MODEL_SEED=%d MODEL_OPS=%d", seed, ops)
		}
	}()
	drops := &dropCounter{}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	r, dir := newTestRegistry(t, fakeffmpeg.Lag, func(c *Config) {
		c.BufferAudio = 2 * time.Second
		c.StartTimeout = time.Second
		c.IdleTimeout = 20 * time.Second
		c.GapFill = 0 // the client writes far ahead of the wall clock
		c.Observer = drops
	})
	headers := [][]byte{hdrV2Mono, hdrV1Stereo, hdrV25Mono}
	var streams []*modelStream
	cur := func() *modelStream { return streams[len(streams)-1] }
	newStream := func() {
		streams = append(streams, &modelStream{id: fmt.Sprintf("m%d", len(streams)), hdr: hdrV2Mono, rng: rng, numbered: len(streams)%2 == 0})
	}
	newStream()
	var kills, refusals, ends, changes, dups, resets, crossed int
	ctx := context.Background()
	for op := 0; op < ops; op++ {
		m := cur()
		switch k := rng.IntN(1000); {
		case k < 8: // kill the running ffmpeg
			if info, ok := r.Info(m.id); ok && info.PID > 0 && info.FFmpeg != "exited" {
				syscall.Kill(info.PID, syscall.SIGKILL)
				kills++
			}
		case k < 12: // the client ends the stream; the next one is another
			if m.sent == m.acked && m.acked > 0 {
				r.End(m.id, CauseClient)
				newStream()
				ends++
			}
		case k < 14: // a new recording in another format
			m.hdr = headers[rng.IntN(len(headers))]
			changes++
		case k < 18: // the client pauses
			time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
		case k < 40 && m.numbered && m.sent == m.acked && len(m.chunks) > m.seqBase: // a retry whose reply was lost
			j := max(m.seqBase, len(m.chunks)-1-rng.IntN(min(64, len(m.chunks)-m.seqBase)))
			res, err := r.WriteSeq(ctx, m.id, testSrc, SeqChunk{Seq: int64(j - m.seqBase)}, m.chunks[j])
			if err != nil || !res.Duplicate {
				t.Fatalf("op %d: retry of chunk %d of %s: %+v, %v; want a duplicate", op, j-m.seqBase, m.id, res, err)
			}
			dups++
		case k < 45 && m.numbered && m.sent == m.acked: // a new recording numbers from 0 again
			m.seqBase = len(m.chunks)
			resets++
		case k < 60 && m.numbered && m.sent == m.acked && len(m.chunks) > m.seqBase: // two chunks cross on the network
			m.addFrames(2 + rng.IntN(4))
			cut := m.acked + rng.IntN(len(m.bytes)-m.acked-1) + 1
			first, second := m.bytes[m.acked:cut], m.bytes[cut:]
			n := int64(len(m.chunks) - m.seqBase)
			late := make(chan error, 1)
			go func() {
				_, err := r.WriteSeq(ctx, m.id, testSrc, SeqChunk{Seq: n + 1}, second)
				late <- err
			}()
			time.Sleep(time.Millisecond) // usually the second arrives first; either order must do
			_, err1 := r.WriteSeq(ctx, m.id, testSrc, SeqChunk{Seq: n}, first)
			err2 := <-late
			if err1 != nil || err2 != nil {
				// A refusal (buffer, a killed first ffmpeg) of either: the
				// model stops here; both are resent as one chunk later.
				if err1 == nil {
					m.chunks = append(m.chunks, first)
					m.acked = cut
				}
				m.sent = m.acked
				refusals++
				if err1 != nil && err2 == nil {
					// The second went on without the first after
					// -seq-wait: a hole the client was told of (the first
					// was refused). Frames from the hole on are not
					// checked; the client starts another stream.
					m.holeFrom = uint32(frameAt(m.ends, m.acked))
					r.End(m.id, CauseClient)
					newStream()
				}
				break
			}
			m.chunks = append(m.chunks, first, second)
			m.acked, m.sent = len(m.bytes), len(m.bytes)
			crossed++
		default: // a write cut anywhere, or the retry of a refused one
			if m.sent == m.acked {
				if len(m.bytes)-m.acked < 2000 {
					m.addFrames(1 + rng.IntN(8))
				}
				m.sent = min(len(m.bytes), m.acked+1+rng.IntN(1500))
			}
			var err error
			if m.numbered {
				_, err = m.writeSeq(r, m.bytes[m.acked:m.sent])
			} else {
				_, err = r.Write(ctx, m.id, testSrc, m.bytes[m.acked:m.sent])
			}
			switch {
			case err == nil:
				if m.numbered {
					m.chunks = append(m.chunks, m.bytes[m.acked:m.sent])
				}
				m.acked = m.sent
			case errors.Is(err, ErrBufferFull), errors.As(err, new(*UpstreamError)):
				refusals++ // full, or a first ffmpeg killed: the client sends it again
				time.Sleep(time.Millisecond)
			default:
				t.Fatalf("op %d: write to %s: %v", op, m.id, err)
			}
		}
	}
	t.Logf("%d operations: %d streams, %d kills, %d refusals, %d format changes, %d numbered retries, %d numbering restarts, %d crossed chunks",
		ops, len(streams), kills, refusals, changes, dups, resets, crossed)
	// A kill just before shutdown counts as one from outside during it
	// (see outside.go): let the last restart happen first.
	waitFor(t, "the last stream publishing", func() bool { info, _ := r.Info(cur().id); return info.FFmpeg == "publishing" || info.Buffered == 0 })
	closeRegistry(t, r)
	if n := drops.total(); n > 0 {
		t.Errorf("%d acknowledged bytes given up: %v", n, drops.byCause)
	}
	for _, m := range streams {
		checkModelStream(t, dir, m)
	}
}

// dropCounter counts what sessions give up, by cause.
type dropCounter struct {
	nopObserver
	mu      sync.Mutex
	byCause map[string]int
}

func (d *dropCounter) Dropped(cause string, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byCause == nil {
		d.byCause = map[string]int{}
	}
	d.byCause[cause] += n
}

func (d *dropCounter) total() (n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.byCause {
		n += v
	}
	return n
}

// frameAt is the number of frames wholly before byte offset off.
func frameAt(ends []int, off int) int {
	n := 0
	for n < len(ends) && ends[n] <= off {
		n++
	}
	return n
}

// checkModelStream checks what the fakes of one stream published against
// what its client got acknowledged.
func checkModelStream(t *testing.T, dir string, m *modelStream) {
	t.Helper()
	acked := 0 // frames wholly acknowledged
	for acked < len(m.ends) && m.ends[acked] <= m.acked {
		acked++
	}
	next := uint32(0) // the first frame not yet published
	dups := 0
	for run, out := range received(t, dir, m.id) {
		var prev uint32
		first := true
		for len(out) > 0 {
			h, ok := parseHeader(out)
			if ok && h.length > len(out) && h.length <= maxFrameLen {
				break // the kill cut the fake's last write to its file
			}
			if !ok {
				t.Fatalf("%s run %d: not a frame at %d bytes from its end: % x", m.id, run, len(out), out[:min(len(out), 16)])
			}
			n, ok := frameNumber(out[:h.length])
			out = out[h.length:]
			if !ok {
				continue // silence
			}
			if m.holeFrom > 0 && n >= m.holeFrom {
				break
			}
			switch {
			case first && n > next:
				t.Fatalf("%s run %d starts at frame %d: frames %d to %d are lost", m.id, run, n, next, n-1)
			case first && next-n > maxPreroll+1:
				t.Fatalf("%s run %d starts at frame %d, %d frames before the first unpublished (%d): beyond the pre-roll", m.id, run, n, next-n, next)
			case !first && n != prev+1:
				t.Fatalf("%s run %d: frame %d follows frame %d", m.id, run, n, prev)
			}
			if n < next {
				dups++
			}
			first, prev = false, n
			next = max(next, n+1)
		}
	}
	if int(next) < acked {
		t.Fatalf("%s: %d frames acknowledged, published up to %d", m.id, acked, next)
	}
	if int(next) > len(m.ends) {
		t.Fatalf("%s: published frame %d, never written", m.id, next-1)
	}
	t.Logf("%s: %d frames acknowledged and published, %d published twice after restarts", m.id, acked, dups)
}
