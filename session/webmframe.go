package session

import (
	"encoding/binary"
	"math"
	"time"
)

// webmFramer writes the units of one WebM segment to one ffmpeg as a WebM
// stream of its own: the segment's init data, then clusters it opens
// itself, each block's timecode rewritten to the audio written before it.
//
// Why: a client's timestamps follow its own clock, which knows nothing of
// the silence gap fill adds nor of the units a new ffmpeg starts from.
// Timed by the audio handed on, as flvFramer times MP3, silence and client
// blocks are just units in sequence: the timeline is continuous and never
// overlaps, whatever the client's clock did.
//
// A framer serves one ffmpeg. Not safe for concurrent use; the holder of
// the session's writer lock owns it.
type webmFramer struct {
	at      time.Duration // audio written to this ffmpeg so far
	scale   int64         // nanoseconds per tick, from the init data's Info
	cluster int64         // timecode of the open cluster in ticks; -1 before the first
	buf     []byte
}

// clusterSpan is how much audio a framer's cluster holds at most: far
// below the 32 s a block's 16-bit relative timecode reaches at 1 ms ticks.
const clusterSpan = 5 * time.Second

// frame returns units (whole blocks, as the scanner cut them, or
// silence) as a WebM stream, starting with init when start is set (a new
// ffmpeg). The result is valid until the next call.
func (f *webmFramer) frame(init []byte, units []unit, start bool) []byte {
	out := f.buf[:0]
	if start {
		*f = webmFramer{scale: int64(time.Millisecond), cluster: -1}
		if si, err := parseInit(init); err == nil {
			f.scale = si.scale
		}
		out = append(out, init...)
	}
	for i := range units {
		out = f.unit(out, units[i].data)
		f.at += units[i].dur
	}
	f.buf = out
	return out
}

// unit appends the blocks of one unit's data, retimed to f.at; the client's
// Cluster headers and Timecodes in it are dropped.
func (f *webmFramer) unit(out, data []byte) []byte {
	for len(data) > 0 {
		h, ok, err := readHeader(data)
		if err != nil || !ok {
			return out // the scanner passes whole elements only
		}
		if h.id == idCluster && h.size < 0 {
			data = data[h.len:]
			continue
		}
		if h.size < 0 || h.size > int64(len(data)-h.len) {
			return out
		}
		el := data[:h.len+int(h.size)]
		data = data[len(el):]
		if h.id != idSimpleBlock && h.id != idBlockGroup {
			continue
		}
		at := f.ticks(f.at)
		if f.cluster < 0 || at-f.cluster > min(math.MaxInt16, int64(clusterSpan)/f.scale) {
			f.cluster = at
			out = append(out, clusterHead...)
			out = append(out, 0xE7, 0x88) // Timecode, 8 bytes
			out = binary.BigEndian.AppendUint64(out, uint64(at))
		}
		n := len(out)
		out = append(out, el...)
		if off := timecodeOffset(h, el); off > 0 {
			binary.BigEndian.PutUint16(out[n+off:], uint16(int16(at-f.cluster)))
		}
	}
	return out
}

// ticks is d in the segment's timecode ticks, rounded to the nearest.
func (f *webmFramer) ticks(d time.Duration) int64 {
	return (int64(d) + f.scale/2) / f.scale
}

// timecodeOffset is where the 16-bit relative timecode sits in el, a
// SimpleBlock or BlockGroup whose header is h; 0 when el has none.
func timecodeOffset(h elemHeader, el []byte) int {
	p := el[h.len:]
	base := h.len
	if h.id == idBlockGroup {
		for len(p) > 0 {
			ch, ok, err := readHeader(p)
			if err != nil || !ok || ch.size < 0 || ch.size > int64(len(p)-ch.len) {
				return 0
			}
			if ch.id == idBlock {
				base += ch.len
				p = p[ch.len : ch.len+int(ch.size)]
				break
			}
			base += ch.len + int(ch.size)
			p = p[ch.len+int(ch.size):]
		}
	}
	if len(p) == 0 {
		return 0
	}
	n := vintLen(p[0])
	if n == 0 || len(p) < n+3 {
		return 0
	}
	return base + n
}

// segmentInit is what the framer and gap fill need of a segment's init
// data (EBML header, Segment header, Info, Tracks).
type segmentInit struct {
	scale  int64
	tracks map[uint64]webmTrack
	timing uint64 // the track whose blocks carry the stream's duration
}

// parseInit reads init data as the scanner makes it.
func parseInit(init []byte) (segmentInit, error) {
	si := segmentInit{scale: int64(time.Millisecond)}
	for p := init; len(p) > 0; {
		h, ok, err := readHeader(p)
		if err != nil {
			return si, err
		}
		if !ok {
			return si, notWebM("cut init data")
		}
		if h.id == idSegment {
			p = p[h.len:]
			continue
		}
		if h.size < 0 || h.size > int64(len(p)-h.len) {
			return si, notWebM("element 0x%X overruns the init data", h.id)
		}
		payload := p[h.len : h.len+int(h.size)]
		p = p[h.len+int(h.size):]
		switch h.id {
		case idInfo:
			si.scale, err = parseTimecodeScale(payload)
		case idTracks:
			si.tracks, si.timing, err = parseTracks(payload)
		}
		if err != nil {
			return si, err
		}
	}
	if si.tracks == nil {
		return si, notWebM("init data without Tracks")
	}
	return si, nil
}

// opusSilence is a 20 ms Opus packet that decodes to silence: CELT
// fullband, one frame (TOC 0xF8, or 0xFC for stereo), whose range-coded
// silence flag is set.
func opusSilence(stereo bool) []byte {
	toc := byte(31<<3 | 0)
	if stereo {
		toc |= 0x04
	}
	return []byte{toc, 0xFF, 0xFE}
}

const opusSilenceDur = 20 * time.Millisecond

// silentBlock is a SimpleBlock of track holding one silent Opus packet,
// a keyframe at relative timecode 0 (the framer sets it).
func silentBlock(track uint64, stereo bool) []byte {
	var num []byte
	switch {
	case track < 1<<7-1:
		num = []byte{0x80 | byte(track)}
	case track < 1<<14-1:
		num = []byte{0x40 | byte(track>>8), byte(track)}
	default:
		return nil // no recorder numbers its tracks this high
	}
	pkt := opusSilence(stereo)
	size := len(num) + 3 + len(pkt)
	b := []byte{idSimpleBlock, 0x80 | byte(size)}
	b = append(b, num...)
	b = append(b, 0, 0, 0x80)
	return append(b, pkt...)
}
