package whip

import (
	"time"

	"github.com/pion/rtp"
)

// Stats describe a peer's incoming audio as an RTCP receiver report does
// (RFC 3550 §6.4.1), plus what the timeline filled.
type Stats struct {
	Received int64         // packets that arrived
	Lost     int64         // expected (by sequence numbers) less received, never below 0
	Jitter   time.Duration // interarrival jitter
	Late     int64         // arrived after their place was given up, dropped
	Filled   time.Duration // silence put in for lost packets and DTX
}

// rtpStats keeps the receiver report's counters. Not safe for concurrent
// use; the peer guards it.
type rtpStats struct {
	Stats
	started  bool
	ssrc     uint32
	before   int64  // packets expected from the sender's earlier SSRCs
	base     uint32 // extended sequence number of the first packet
	maxSeq   uint32 // highest extended sequence number seen
	jitter   float64
	lastTS   uint32
	lastSeen time.Time
}

// received counts p, which arrived at now.
func (s *rtpStats) received(p *rtp.Packet, now time.Time) {
	s.Received++
	seq := uint32(p.SequenceNumber)
	if s.started && p.SSRC != s.ssrc { // a new source counts from its own first packet
		s.before += int64(s.maxSeq - s.base + 1)
		s.started = false
	}
	if !s.started {
		s.started, s.ssrc, s.base, s.maxSeq = true, p.SSRC, seq, seq
		s.lastTS, s.lastSeen = p.Timestamp, now
		return
	}
	// Extend the 16-bit number to the one nearest the highest seen.
	ext := s.maxSeq&^0xFFFF | seq
	switch {
	case ext+0x8000 < s.maxSeq:
		ext += 0x10000
	case ext > s.maxSeq+0x8000 && ext >= 0x10000:
		ext -= 0x10000
	}
	s.maxSeq = max(s.maxSeq, ext)
	s.Lost = max(0, s.before+int64(s.maxSeq-s.base+1)-s.Received)

	arrival := float64(now.Sub(s.lastSeen)) * opusRate / float64(time.Second)
	d := arrival - float64(int32(p.Timestamp-s.lastTS))
	if d < 0 {
		d = -d
	}
	s.jitter += (d - s.jitter) / 16
	s.Jitter = time.Duration(s.jitter * float64(time.Second) / opusRate)
	s.lastTS, s.lastSeen = p.Timestamp, now
}
