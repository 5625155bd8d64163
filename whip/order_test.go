package whip

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pion/rtp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func packet(seq uint16, ts uint32) *rtp.Packet {
	return &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts}, Payload: []byte{0xF8, 1, 2, 3}} // 20 ms CELT
}

// Packets lost, swapped within the depth, duplicated, late, across the
// sequence number's wrap: what comes out is in order, each once, and the
// timeline, with its silence, lasts exactly as long as the sender's clock.
func TestReorderAndTimelineFollowSenderClock(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 2))
	const n = 3000
	start := uint16(65000) // wraps
	var sent []*rtp.Packet
	for i := range n {
		if rng.Float64() < 0.05 && i > 0 && i < n-1 {
			continue // lost
		}
		sent = append(sent, packet(start+uint16(i), uint32(i)*960))
	}
	for i := 1; i+1 < len(sent); i++ { // swap neighbours, 5 % (not the first: nothing can tell it is early)
		if rng.Float64() < 0.05 {
			sent[i], sent[i+1] = sent[i+1], sent[i]
			i++
		}
	}
	sent = append(sent[:10:10], append([]*rtp.Packet{sent[3]}, sent[10:]...)...) // a duplicate
	r := newReorder(reorderDepth)
	var tl timeline
	var out []*rtp.Packet
	var pkts [][]byte
	for _, p := range sent {
		got := r.push(p, nil)
		out = append(out, got...)
		for _, o := range got {
			pkts = tl.frames(pkts, o)
		}
	}
	for _, o := range r.flush(nil) {
		out = append(out, o)
		pkts = tl.frames(pkts, o)
	}
	for i := 1; i < len(out); i++ {
		if d := int16(out[i].SequenceNumber - out[i-1].SequenceNumber); d <= 0 {
			t.Fatalf("seed %d: %d after %d", seed, out[i].SequenceNumber, out[i-1].SequenceNumber)
		}
	}
	var total int
	for _, p := range pkts {
		total += opusSamples(p)
	}
	if total != n*960 || len(out) != len(sent)-1 {
		t.Errorf("seed %d: %d samples from %d packets, want %d from %d", seed, total, len(out), n*960, len(sent)-1)
	}
	if want := time.Duration(n*960-len(out)*960) * time.Second / opusRate; tl.filled != want {
		t.Errorf("seed %d: %v filled, want %v", seed, tl.filled, want)
	}
}

// A packet that comes after its place was given up is dropped and counted
// late; a sender that starts counting again is followed, not waited for.
func TestReorderLateAndRestart(t *testing.T) {
	r := newReorder(2)
	var out []*rtp.Packet
	for _, seq := range []uint16{10, 12, 13, 14} { // 11 lost: given up after 2 behind
		out = r.push(packet(seq, 0), out)
	}
	out = r.push(packet(11, 0), out)
	if len(out) != 4 || r.late != 1 {
		t.Fatalf("%d out, %d late; want 4 and 1", len(out), r.late)
	}
	out = r.push(packet(5000, 0), out[:0])
	if len(out) != 1 || out[0].SequenceNumber != 5000 {
		t.Fatalf("a restarted sender's packet: %d out", len(out))
	}
}

// A gap of DTX is filled in shorter silent packets down to 2.5 ms, and a
// gap longer than maxFill is left to the session's own gap fill.
func TestTimelineFillsGaps(t *testing.T) {
	var tl timeline
	pkts := tl.frames(nil, packet(1, 0))
	pkts = tl.frames(pkts, packet(2, 960+960+480+120)) // 32.5 ms gap
	var samples int
	for _, p := range pkts {
		samples += opusSamples(p)
	}
	if samples != 960+960+480+120+960 || len(pkts) != 5 {
		t.Errorf("%d samples in %d packets", samples, len(pkts))
	}
	n := len(pkts)
	pkts = tl.frames(pkts, packet(3, 10*opusRate))
	if len(pkts) != n+1 {
		t.Errorf("a 10 s jump was filled with %d packets", len(pkts)-n-1)
	}
}

func TestStatsLossAndJitter(t *testing.T) {
	var s rtpStats
	now := time.Now()
	for i, seq := range []uint16{65534, 65535, 1, 2} { // 0 lost across the wrap
		s.received(packet(seq, uint32(i)*960), now.Add(time.Duration(i)*20*time.Millisecond))
	}
	if s.Received != 4 || s.Lost != 1 || s.Jitter > time.Millisecond {
		t.Errorf("%+v: want 4 received, 1 lost, no jitter", s.Stats)
	}
}

// A packet's samples come from its TOC byte; one claiming more than the
// 120 ms a packet may carry counts as none, so it cannot stretch the
// timeline.
func TestOpusSamples(t *testing.T) {
	for _, c := range []struct {
		pkt  []byte
		want int
	}{
		{[]byte{31 << 3}, 960}, {[]byte{31<<3 | 1}, 1920}, {[]byte{3 << 3}, 2880},
		{[]byte{31<<3 | 3, 6}, 5760}, {[]byte{31<<3 | 3, 7}, 0}, {[]byte{3<<3 | 3, 63}, 0},
		{[]byte{31<<3 | 3}, 0}, {nil, 0},
	} {
		if got := opusSamples(c.pkt); got != c.want {
			t.Errorf("% x: %d samples, want %d", c.pkt, got, c.want)
		}
	}
}

// A new SSRC is a sender that started its stream again: its first packet is
// passed on whatever its sequence number, never dropped as late.
func TestReorderNewSSRC(t *testing.T) {
	r := newReorder(2)
	var out []*rtp.Packet
	for _, seq := range []uint16{500, 501, 502} {
		out = r.push(packet(seq, 0), out)
	}
	p := packet(450, 0) // within maxSeqJump behind: late, were it the same sender
	p.SSRC++
	out = r.push(p, out[:0])
	if len(out) != 1 || out[0] != p || r.late != 0 {
		t.Fatalf("the new sender's first packet: %d out, %d late", len(out), r.late)
	}
}

// A new SSRC counts its losses from its own first packet: the jump between
// two senders' sequence numbers is no loss.
func TestStatsNewSSRC(t *testing.T) {
	var s rtpStats
	now := time.Now()
	for i, seq := range []uint16{100, 101, 103} { // 102 lost
		s.received(packet(seq, uint32(i)*960), now)
	}
	for i, seq := range []uint16{40000, 40001} {
		p := packet(seq, uint32(i)*960)
		p.SSRC++
		s.received(p, now)
	}
	if s.Received != 5 || s.Lost != 1 {
		t.Errorf("%+v: want 5 received, 1 lost", s.Stats)
	}
}
