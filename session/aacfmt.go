package session

import (
	"encoding/binary"
	"time"
)

// aacUnits cuts ADTS into frames; a frame in another configuration than the
// one before it (a new recording) opens a new segment. AAC goes to ffmpeg in
// FLV (see aacFramer) and is published as it is: FLV carries AAC at any
// rate.
type aacUnits struct {
	sc     adtsScanner
	last   adtsConfig // of the last frame passed on; zero before the first
	seen   bool       // a frame was passed on
	silent *aacSilence
	saved  struct {
		sc    adtsScanner
		carry []byte
		last  adtsConfig
		seen  bool
	}
}

func (a *aacUnits) mark() {
	a.saved.sc, a.saved.last, a.saved.seen = a.sc, a.last, a.seen
	a.saved.carry = append(a.saved.carry[:0], a.sc.carry...)
}

func (a *aacUnits) rollback() {
	carry, out := a.sc.carry, a.sc.out
	a.sc, a.last, a.seen = a.saved.sc, a.saved.last, a.saved.seen
	a.sc.carry = append(carry[:0], a.saved.carry...)
	a.sc.out = out
}

func (a *aacUnits) feed(p []byte) ([]unit, error) {
	frames, err := a.sc.feed(p)
	if err != nil {
		return nil, err
	}
	return a.cut(nil, frames), nil
}

func (a *aacUnits) flush() []unit { return a.cut(nil, a.sc.flush()) }

// cut copies whole frames into units (the log keeps them past the next
// feed): one allocation per write.
func (a *aacUnits) cut(units []unit, frames []byte) []unit {
	buf := append([]byte(nil), frames...)
	for len(buf) > 0 {
		h, ok := parseADTS(buf)
		if !ok || h.length > len(buf) {
			break // the scanner passes whole frames only
		}
		u := unit{data: buf[:h.length:h.length], dur: h.duration()}
		if a.seen && h.adtsConfig != a.last {
			u.newSeg = true
		}
		if !a.seen || u.newSeg {
			a.silent.prepareFor(h.adtsConfig) // ready before a gap can be due
		}
		a.last, a.seen = h.adtsConfig, true
		units = append(units, u)
		buf = buf[h.length:]
	}
	return units
}

func (a *aacUnits) input() string        { return "flv" }
func (a *aacUnits) framer() framer       { return &aacFramer{} }
func (a *aacUnits) preroll() prerollFunc { return aacPreroll }
func (a *aacUnits) copyable(unit) bool   { return true }

// alwaysCopy: AAC is what the output carries; encoding it again would only
// cost CPU and quality, whatever -audio-codec says.
func (a *aacUnits) alwaysCopy() bool { return true }

// silence returns silent frames in the last frame's configuration, or nil
// while none is encoded yet (gap fill looks again later).
func (a *aacUnits) silence(d time.Duration) []unit {
	if !a.seen {
		return nil
	}
	f := a.silent.frameFor(a.last)
	if f == nil {
		return nil
	}
	dur := a.last.duration()
	units := make([]unit, int(d/dur)+1)
	for i := range units {
		units[i] = unit{data: f, dur: dur, silence: true}
	}
	return units
}

// prepareFor and frameFor tolerate a nil cache (a session without a
// registry's): no gap fill then.
func (s *aacSilence) prepareFor(c adtsConfig) {
	if s != nil {
		s.prepare(c)
	}
}

func (s *aacSilence) frameFor(c adtsConfig) []byte {
	if s == nil {
		return nil
	}
	return s.frame(c)
}

// aacPreroll starts a new attempt one frame early: a decoder's first frame
// has no previous one to overlap with (the MDCT's windows), so it decodes
// as a fade-in; the frame before takes that role.
func aacPreroll(l *streamLog, from, pos int64) int64 {
	if pos > from {
		return pos - 1
	}
	return pos
}

// aacFramer turns whole ADTS frames into FLV AAC tags on their way to
// ffmpeg's stdin: the AudioSpecificConfig first, then one raw frame per tag,
// its ADTS header stripped. ffmpeg's FLV demuxer reads one tag at a time,
// so every frame goes on as soon as it is written, with timestamps counted
// here (see flvFramer, the same for MP3). A framer serves one ffmpeg, which
// reads one segment: one configuration.
type aacFramer struct {
	samples int64 // per channel, written to this ffmpeg so far
	rate    int
	buf     []byte
}

func (f *aacFramer) frame(_ []byte, units []unit, start bool) []byte {
	out := f.buf[:0]
	if start {
		*f = aacFramer{buf: out}
		out = append(out, flvHeader...)
		if len(units) > 0 {
			if h, ok := parseADTS(units[0].data); ok {
				f.rate = h.rate()
				out = f.tag(out, 0, h.asc())
			}
		}
	}
	for i := range units {
		out = f.frames(out, units[i].data)
	}
	f.buf = out
	return out
}

// frames appends data's ADTS frames as tags, one a frame.
func (f *aacFramer) frames(out, data []byte) []byte {
	for len(data) > 0 {
		h, ok := parseADTS(data)
		if !ok || h.length > len(data) || f.rate == 0 {
			break // the scanner passes whole frames of one configuration only
		}
		out = f.tag(out, 1, data[h.headerLen():h.length])
		f.samples += adtsSamples
		data = data[h.length:]
	}
	return out
}

// tag appends one FLV audio tag: AAC (10), flags as the FLV specification
// fixes them for AAC, then the packet type (0: AudioSpecificConfig, 1: a
// raw frame).
func (f *aacFramer) tag(out []byte, kind byte, payload []byte) []byte {
	ms := f.samples * 1000 / int64(f.rate)
	size := len(payload) + 2
	out = append(out, 8, byte(size>>16), byte(size>>8), byte(size),
		byte(ms>>16), byte(ms>>8), byte(ms), byte(ms>>24), // timestamp, then its high byte
		0, 0, 0, // stream id
		10<<4|3<<2|1<<1|1, kind)
	out = append(out, payload...)
	return binary.BigEndian.AppendUint32(out, uint32(size+11))
}
