package session

import (
	"slices"
	"time"
)

// unitScanner turns a client's bytes, cut anywhere, into whole units. The
// session calls mark before feed and rollback when it refuses the write, so
// that a refused write leaves no trace and its retry is byte-identical to a
// first try.
type unitScanner interface {
	feed(p []byte) ([]unit, error)
	mark()
	rollback()
	// flush returns what is still held back when the stream ends.
	flush() []unit
}

// mp3Units cuts MP3 into frames; a frame in another format than the one
// before it (a new recording) opens a new segment.
type mp3Units struct {
	sc     mp3Scanner
	last   frameHeader // of the last frame passed on
	silent []byte      // one silent frame in last's format, for gap fill
	saved  struct {
		sc    mp3Scanner
		carry []byte
		last  frameHeader
	}
}

func (m *mp3Units) mark() {
	m.saved.sc, m.saved.last = m.sc, m.last
	m.saved.carry = append(m.saved.carry[:0], m.sc.carry...)
}

func (m *mp3Units) rollback() {
	carry, out := m.sc.carry, m.sc.out
	m.sc, m.last = m.saved.sc, m.saved.last
	m.sc.carry = append(carry[:0], m.saved.carry...)
	m.sc.out = out
}

func (m *mp3Units) feed(p []byte) ([]unit, error) {
	var units []unit
	for data := p; ; data = nil {
		out, err := m.sc.feed(data)
		if err != nil {
			return nil, err
		}
		units = m.cut(units, out)
		// The scanner stops at the first frame of a new format; the rest
		// comes with the next call.
		if !m.sc.formatChanged {
			return units, nil
		}
		m.sc.formatChanged = false
	}
}

func (m *mp3Units) flush() []unit { return m.cut(nil, m.sc.flush()) }

// cut copies whole frames into units (the log keeps them past the next
// feed): one allocation per write.
func (m *mp3Units) cut(units []unit, frames []byte) []unit {
	buf := append([]byte(nil), frames...)
	if h, ok := parseHeader(buf); ok && h.length > 0 {
		units = slices.Grow(units, len(buf)/h.length+1) // an estimate: frame lengths vary with padding and VBR
	}
	for len(buf) > 0 {
		h, ok := parseHeader(buf)
		if !ok || h.length > len(buf) {
			break // the scanner passes whole frames only
		}
		u := unit{data: buf[:h.length:h.length], dur: h.duration()}
		if m.last.sampleRate != 0 && !sameStream(m.last, h) {
			u.newSeg = true
		}
		m.last = h
		units = append(units, u)
		buf = buf[h.length:]
	}
	return units
}

// mp3Preroll: an MP3 frame's main data may begin in the frames before it
// (the bit reservoir, main_data_begin bytes back), and its first granule
// overlaps the previous frame's last; a fresh decoder reads those first.
func mp3Preroll(l *streamLog, from, pos int64) int64 {
	frame := l.at(pos).data
	h, ok := parseHeader(frame)
	if !ok {
		return pos
	}
	need := mainDataBegin(frame, h)
	p := pos
	for need > 0 && p > from && pos-p < maxPreroll {
		p--
		need -= mainDataLen(l.at(p).data)
	}
	if p > from {
		p-- // the overlap with the frame before
	}
	return p
}

// maxPreroll bounds the pre-roll: the reservoir is at most 511 bytes, a
// handful of frames even at 8 kbps.
const maxPreroll = 16

// mainDataBegin is how many bytes before this frame its main data starts.
func mainDataBegin(frame []byte, h frameHeader) int {
	off := 4
	if h.protected {
		off += 2
	}
	if len(frame) < off+2 {
		return 0
	}
	if h.version == 1 {
		return int(frame[off])<<1 | int(frame[off+1])>>7
	}
	return int(frame[off])
}

// mainDataLen is how many bytes of main data a frame holds.
func mainDataLen(frame []byte) int {
	h, ok := parseHeader(frame)
	if !ok {
		return 0
	}
	n := len(frame) - 4 - h.sideInfoLen()
	if h.protected {
		n -= 2
	}
	return max(n, 0)
}

// rawUnits passes each write on as one unit of unknown duration: a format
// the session cannot cut, replayed from a write boundary.
type rawUnits struct{}

func (rawUnits) feed(p []byte) ([]unit, error) {
	if len(p) == 0 {
		return nil, nil
	}
	return []unit{{data: append([]byte(nil), p...)}}, nil
}
func (rawUnits) mark()         {}
func (rawUnits) rollback()     {}
func (rawUnits) flush() []unit { return nil }

// unitsAudio sums the client audio in units.
func unitsAudio(units []unit) (audio time.Duration) {
	for _, u := range units {
		audio += u.dur
	}
	return audio
}

// webmUnits cuts WebM into blocks (see webmScanner); a new EBML header (a
// restarted recorder) opens a new segment with its own init data.
type webmUnits struct {
	sc webmScanner
	// seg is the init data of the last unit's segment, read, for silence;
	// silent is a block of silence for it, nil when it has none.
	seg    segmentInit
	silent []byte
	saved  struct {
		seg    segmentInit
		silent []byte
	}
}

func (w *webmUnits) mark() {
	w.sc.mark()
	w.saved.seg, w.saved.silent = w.seg, w.silent
}

func (w *webmUnits) rollback() {
	w.sc.rollback()
	w.seg, w.silent = w.saved.seg, w.saved.silent
}

func (w *webmUnits) feed(p []byte) ([]unit, error) {
	us, err := w.sc.feed(p)
	return w.units(us), err
}

func (w *webmUnits) flush() []unit { return w.units(w.sc.flush()) }

func (w *webmUnits) units(us []webmUnit) []unit {
	units := make([]unit, len(us))
	for i, u := range us {
		units[i] = unit{data: u.data, dur: u.dur, newSeg: u.init != nil, init: u.init}
		if u.init != nil {
			w.newSegment(u.init)
		}
	}
	return units
}

// newSegment reads a new segment's init data: silence, in its first audio
// track, exists only for Opus.
func (w *webmUnits) newSegment(init []byte) {
	w.seg, w.silent = segmentInit{}, nil
	si, err := parseInit(init) // the scanner checked it: no error
	if err != nil {
		return
	}
	w.seg = si
	if t := si.tracks[si.timing]; t.opus {
		w.silent = silentBlock(t.number, t.channels == 2)
	}
}

// opusPreroll is what an Opus decoder needs to converge after a start
// mid-stream (RFC 7845 §4.6 recommends 80 ms).
const opusPreroll = 80 * time.Millisecond

// webmPreroll starts a new attempt opusPreroll before pos.
func webmPreroll(l *streamLog, from, pos int64) int64 {
	p := pos
	for d := time.Duration(0); d < opusPreroll && p > from && pos-p < maxPreroll; {
		p--
		d += l.at(p).dur
	}
	return p
}

// WebMDuration returns the audio in a WebM stream as the session would
// count it: the durations of its blocks.
func WebMDuration(data []byte) time.Duration {
	var w webmUnits
	units, err := w.feed(data)
	if err != nil {
		return 0
	}
	return unitsAudio(units) + unitsAudio(w.flush())
}
