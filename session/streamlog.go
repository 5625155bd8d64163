package session

import "time"

// The stream log: every unit of audio a session accepted, in order, until an
// ffmpeg has sent it on. "Accepted" and "acknowledged" mean "appended here".
// Each ffmpeg is an attempt that reads the log from a position; its progress
// reports confirm delivery up to a point, and the next attempt starts there,
// init data first. The log has no processes and no clock.

// unit is one whole media unit: an MP3 frame or a WebM block.
type unit struct {
	data    []byte
	dur     time.Duration
	silence bool // gap fill, not client audio
	// Set by a scanner on the first unit of a new format (a new recording);
	// the log moves them into a segment.
	newSeg bool
	init   []byte
}

// segment is a run of units in one format, read by ffmpegs of its own.
type segment struct {
	start int64  // position of its first unit
	init  []byte // what every attempt of the segment reads first (WebM header and Tracks)
}

// prerollFunc returns the first position a fresh decoder must read so that
// the unit at pos decodes as it would have in the full stream; never before
// from, the first unit the log still has in pos's segment.
type prerollFunc func(l *streamLog, from, pos int64) int64

// streamLog is not safe for concurrent use: the session's writer owns it.
type streamLog struct {
	units     []unit // units[i] is at position base+i
	base      int64
	segs      []segment // every segment from the one holding base on
	confirmed int64     // every unit before it was sent on
	// Unconfirmed audio, what -buffer bounds.
	pendBytes int
	pendAudio time.Duration
	preroll   prerollFunc // nil: none
	// keep is how much confirmed audio stays, for rewind.
	keep time.Duration
}

// end is the position the next unit gets.
func (l *streamLog) end() int64 { return l.base + int64(len(l.units)) }

// at returns the unit at pos, which must be in [base, end).
func (l *streamLog) at(pos int64) *unit { return &l.units[pos-l.base] }

// append adds u at the end.
func (l *streamLog) append(u unit) {
	if u.newSeg || len(l.segs) == 0 {
		l.segs = append(l.segs, segment{start: l.end(), init: u.init})
	}
	u.newSeg, u.init = false, nil
	l.units = append(l.units, u)
	l.pendBytes += len(u.data)
	l.pendAudio += u.dur
}

// segmentAt returns the segment holding pos and where it ends (the next
// segment's start, or -1 for the last).
func (l *streamLog) segmentAt(pos int64) (segment, int64) {
	for i := len(l.segs) - 1; i >= 0; i-- {
		if l.segs[i].start <= pos {
			next := int64(-1)
			if i+1 < len(l.segs) {
				next = l.segs[i+1].start
			}
			return l.segs[i], next
		}
	}
	return segment{}, -1
}

// segmentEnd returns where the segment holding pos ends: the next one's
// start, or the log's end.
func (l *streamLog) segmentEnd(pos int64) int64 {
	if _, next := l.segmentAt(pos); next >= 0 {
		return next
	}
	return l.end()
}

// confirm records that every unit before pos was sent on.
func (l *streamLog) confirm(pos int64) {
	pos = min(pos, l.end())
	if pos <= l.confirmed {
		return // nothing new: progress comes twice a second, writes more often
	}
	for ; l.confirmed < pos; l.confirmed++ {
		u := l.at(l.confirmed)
		l.pendBytes -= len(u.data)
		l.pendAudio -= u.dur
	}
	l.trim()
}

// resumeAt is where a new attempt starts: the first unconfirmed unit, with
// the units before it its decoder needs (pre-roll), within its segment.
func (l *streamLog) resumeAt() int64 {
	pos := l.confirmed
	if pos >= l.end() {
		return pos
	}
	seg, _ := l.segmentAt(pos)
	from := max(seg.start, l.base)
	if l.preroll == nil || pos == from {
		return pos
	}
	return max(from, min(pos, l.preroll(l, from, pos)))
}

// rewind marks up to d of the confirmed audio before the first
// unconfirmed unit as unconfirmed again, within the units kept, the segment
// and what the failed ffmpeg sent (from floor on): an RTMP server that went away loses what it had received but
// not passed on, which ffmpeg had reported sent.
func (l *streamLog) rewind(d time.Duration, floor int64) {
	seg, _ := l.segmentAt(min(l.confirmed, l.end()-1))
	from := max(seg.start, l.base, floor)
	for got := time.Duration(0); got < d && l.confirmed > from; {
		l.confirmed--
		u := l.at(l.confirmed)
		got += u.dur
		l.pendBytes += len(u.data)
		l.pendAudio += u.dur
	}
}

// trim forgets the units no attempt can need again.
func (l *streamLog) trim() {
	keep := l.resumeAt()
	for kept := time.Duration(0); kept < l.keep && keep > l.base; {
		keep--
		kept += l.at(keep).dur
	}
	n := int(keep - l.base)
	if n <= 0 {
		return
	}
	if n < len(l.units)/2 && len(l.units) < 4096 {
		return // trim in batches: each trim copies what stays
	}
	clear(l.units[:n])
	l.units = append(l.units[:0], l.units[n:]...)
	l.base = keep
	for len(l.segs) > 1 && l.segs[1].start <= keep {
		l.segs = l.segs[1:]
	}
}

// truncate removes the units from pos on: a write refused after it was
// appended (the first POST of a stream that could not publish).
func (l *streamLog) truncate(pos int64) {
	pos = min(max(pos, l.confirmed), l.end())
	for p := pos; p < l.end(); p++ {
		u := l.at(p)
		l.pendBytes -= len(u.data)
		l.pendAudio -= u.dur
	}
	clear(l.units[pos-l.base:])
	l.units = l.units[:pos-l.base]
	for len(l.segs) > 0 && l.segs[len(l.segs)-1].start >= pos {
		l.segs = l.segs[:len(l.segs)-1] // no unit left in it
	}
}

// dropUnconfirmed gives up on what no ffmpeg sent: the stream ended without
// it. It returns the client bytes and audio given up.
func (l *streamLog) dropUnconfirmed() (bytes int, audio time.Duration) {
	for p := l.confirmed; p < l.end(); p++ {
		if u := l.at(p); !u.silence {
			bytes += len(u.data)
			audio += u.dur
		}
	}
	l.confirm(l.end())
	return bytes, audio
}
