package whip

import (
	"time"

	"github.com/pion/rtp"
)

// reorder puts RTP packets back in sequence order. A hole waits for its
// packet until depth packets after it have arrived, then it is given up
// (lost); a packet older than the last one passed on is dropped (too late).
// Counting packets rather than time needs no timer: a sender that goes
// quiet (DTX) has nothing held behind a hole anyway.
//
// Not safe for concurrent use; a peer's reader owns it.
type reorder struct {
	depth   int
	started bool
	ssrc    uint32 // the sender's: a new one counts afresh
	next    uint16 // the sequence number passed on next
	held    map[uint16]*rtp.Packet
	late    int64 // packets dropped for coming after their place was given up
}

// reorderDepth is how many packets wait behind a hole: 5 × 20 ms covers
// the reordering of real paths (a few packets) at little delay.
const reorderDepth = 5

// maxSeqJump is the distance past which a sequence number is not reordering
// but a sender that started counting again.
const maxSeqJump = 1000

func newReorder(depth int) *reorder {
	return &reorder{depth: depth, held: map[uint16]*rtp.Packet{}}
}

// push takes one packet and returns those now in order.
func (r *reorder) push(p *rtp.Packet, out []*rtp.Packet) []*rtp.Packet {
	seq := p.SequenceNumber
	if r.started && p.SSRC != r.ssrc { // the sender restarted its stream
		out = r.flush(out)
		r.started = false
	}
	if !r.started {
		r.started, r.ssrc, r.next = true, p.SSRC, seq
	}
	d := int16(seq - r.next)
	switch {
	case d < 0 && -int(d) < maxSeqJump:
		r.late++ // or a duplicate of one passed on
		return out
	case int(d) >= maxSeqJump || d < 0:
		out = r.flush(out)
		r.next = seq
	}
	if _, dup := r.held[seq]; dup {
		return out
	}
	r.held[seq] = p
	out = r.pop(out)
	for len(r.held) > r.depth {
		r.next = r.oldest()
		out = r.pop(out)
	}
	return out
}

// flush returns everything held, in order, giving up the holes.
func (r *reorder) flush(out []*rtp.Packet) []*rtp.Packet {
	for len(r.held) > 0 {
		r.next = r.oldest()
		out = r.pop(out)
	}
	return out
}

// pop passes on the packets that follow r.next without a hole.
func (r *reorder) pop(out []*rtp.Packet) []*rtp.Packet {
	for {
		p, ok := r.held[r.next]
		if !ok {
			return out
		}
		delete(r.held, r.next)
		out = append(out, p)
		r.next++
	}
}

// oldest is the held sequence number nearest after r.next.
func (r *reorder) oldest() uint16 {
	best, first := uint16(0), true
	for seq := range r.held {
		if first || seq-r.next < best-r.next {
			best, first = seq, false
		}
	}
	return best
}

// timeline turns packets in order into the Opus packets the session gets:
// where the sender's RTP clock jumps further than the last packet lasted
// (a packet lost, or DTX, where the sender stops sending during silence),
// silent packets fill the gap, so the audio follows the sender's clock.
type timeline struct {
	started bool
	next    uint32 // RTP timestamp where the last packet's audio ends
	filled  time.Duration
}

// opusRate is Opus's RTP clock (RFC 7587): 48 kHz whatever the audio's rate.
const opusRate = 48000

// maxFill bounds the gap filled from RTP timestamps; past it the sender
// restarted its clock or stopped for long, and the session's own gap fill,
// on the wall clock, covers the pause.
const maxFill = time.Second

// frames appends p's Opus packet to out, after silence for any gap before it.
func (tl *timeline) frames(out [][]byte, p *rtp.Packet) [][]byte {
	if len(p.Payload) == 0 {
		return out
	}
	if gap := int32(p.Timestamp - tl.next); tl.started && gap > 0 && samplesDur(int64(gap)) <= maxFill {
		out = appendSilence(out, int64(gap))
		tl.filled += samplesDur(int64(gap) / silenceStep * silenceStep)
	}
	tl.started = true
	tl.next = p.Timestamp + uint32(opusSamples(p.Payload))
	return append(out, p.Payload)
}

func samplesDur(n int64) time.Duration { return time.Duration(n) * time.Second / opusRate }

// silenceStep is the shortest silent packet: CELT's 2.5 ms, in samples.
const silenceStep = opusRate / 400

// appendSilence appends silent CELT packets (the silence flag set) lasting
// n samples, in 20 ms packets and then shorter ones; less than 2.5 ms is left
// out.
func appendSilence(out [][]byte, n int64) [][]byte {
	for _, f := range []struct {
		samples int64
		config  byte
	}{{960, 31}, {480, 30}, {240, 29}, {120, 28}} {
		for ; n >= f.samples; n -= f.samples {
			out = append(out, []byte{f.config << 3, 0xFF, 0xFE})
		}
	}
	return out
}

// opusSamples is how many 48 kHz samples an Opus packet carries (RFC 6716
// §3.1), 0 for a malformed one.
func opusSamples(pkt []byte) int {
	if len(pkt) == 0 {
		return 0
	}
	config := pkt[0] >> 3
	var frame int // in samples at 48 kHz
	switch {
	case config < 12:
		frame = []int{480, 960, 1920, 2880}[config%4]
	case config < 16:
		frame = []int{480, 960}[config%2]
	default:
		frame = []int{120, 240, 480, 960}[config%4]
	}
	switch pkt[0] & 3 {
	case 0:
		return frame
	case 1, 2:
		return 2 * frame
	}
	if len(pkt) < 2 {
		return 0
	}
	if n := int(pkt[1]&0x3F) * frame; n <= 5760 {
		return n
	}
	return 0 // over the 120 ms a packet may carry (RFC 6716 §3.2.5)
}
