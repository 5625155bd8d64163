package session

import (
	"bytes"
	"slices"
	"time"
)

// WebM scanning. A browser's MediaRecorder sends one WebM stream (an EBML
// header, a Segment of unknown size, Info, Tracks, then Clusters of unknown
// size holding SimpleBlocks) in slices cut anywhere. A decoder can only
// start at the top of it, so the scanner splits the stream into the init
// data every new ffmpeg needs first and whole blocks with their durations,
// each able to start a fresh ffmpeg after the init data and a resume header.
//
// What passes on: the EBML header, the Segment header (rewritten to unknown
// size), Info and Tracks as init data; each Cluster header (rewritten to
// unknown size, as MediaRecorder writes it), its Timecode, and each
// SimpleBlock and BlockGroup as units. Everything else (SeekHead, Cues,
// Tags, Void, CRC-32, ...) is dropped: a decoder reading a pipe has no use
// for it, and dropping a cluster's child is safe once the cluster's size
// is unknown.

// maxWebMElement bounds an element the scanner holds whole (a block, Tracks,
// the EBML header); elements it drops are skipped however large.
const maxWebMElement = 1 << 20

// maxWebMHeld bounds the units waiting for a block's duration (a codec
// without frame durations, timed by the next block) before an estimate is
// used instead.
const maxWebMHeld = 4 << 20

// webmUnit is one whole media unit of a WebM stream.
type webmUnit struct {
	// data is one SimpleBlock or BlockGroup as received, preceded, when it
	// is the first block of its cluster, by a Cluster header of unknown size
	// and the cluster's Timecode.
	data []byte
	// dur is the audio it carries: from the Opus TOC for A_OPUS; otherwise
	// the track's DefaultDuration, the BlockDuration, or the gap to the next
	// block. Blocks of tracks other than the first audio track carry 0.
	dur time.Duration
	// resume is a Cluster header of unknown size and this cluster's Timecode:
	// what a fresh decoder needs, after init, before data, to start at this
	// unit. Nil when data opens its cluster itself.
	resume []byte
	// init is set on the first unit of a segment: the EBML header, a Segment
	// header of unknown size, Info and Tracks.
	init []byte
}

// webmScanner is not safe for concurrent use; the session's writer owns it.
type webmScanner struct {
	cur   webmState
	saved webmState // set by mark
}

type webmPhase uint8

const (
	wantEBML    webmPhase = iota // at the start, or after a Segment of known size
	wantSegment                  // after the EBML header
	inHeader                     // Segment children before the first Cluster
	inMedia                      // Clusters
)

// webmState is the whole state of a scanner. Its slices are only appended
// to or replaced, never written in place, so a copy is a snapshot.
type webmState struct {
	phase      webmPhase
	carry      []byte // received bytes not yet consumed
	pos        int64  // stream offset of carry[0]
	skip       int64  // bytes of a dropped element still to come
	segEnd     int64  // offset where the Segment ends, -1 when unknown
	inCluster  bool
	clusterEnd int64 // offset where the Cluster ends, -1 when unknown

	ebml    []byte // the segment's EBML header
	init    []byte // init data being collected
	initOut []byte // init data for the next unit
	tracks  map[uint64]webmTrack
	timing  uint64 // the track whose blocks carry the stream's duration
	scale   int64  // nanoseconds per timecode tick

	pending     []byte // Cluster header and Timecode not yet in a unit
	opened      bool   // pending holds this cluster's header
	resume      []byte
	clusterTime int64

	held      []webmUnit // held[0] waits for the next timing block
	heldBytes int
	heldAt    int64         // held[0]'s timecode in ticks
	lastGap   time.Duration // the latest block duration measured by gap
}

// feed takes the next bytes, cut anywhere, and returns the units they
// complete. On error the scanner is exactly as before the call.
func (s *webmScanner) feed(p []byte) ([]webmUnit, error) {
	st := s.cur
	out, err := st.scan(p)
	if err != nil {
		return nil, err
	}
	s.cur = st
	return out, nil
}

// mark remembers the scanner's state for rollback.
func (s *webmScanner) mark() { s.saved = s.cur }

// rollback returns the scanner to its state at the last mark, so that a
// write the session refused can be retried byte for byte.
func (s *webmScanner) rollback() { s.cur = s.saved }

// flush returns the units held for a duration that only the next block
// would tell, with an estimate; call it when the stream ends.
func (s *webmScanner) flush() []webmUnit {
	return s.cur.release(nil, s.cur.lastGap)
}

const ebmlMagic = "\x1A\x45\xDF\xA3"

type webmAction uint8

const (
	actSkip    webmAction = iota // drop the element
	actWhole                     // take the whole element
	actDescend                   // take the header, then the children
	actRestart                   // a new segment starts here
)

func (st *webmState) scan(p []byte) ([]webmUnit, error) {
	buf := append(st.carry, p...)
	off := 0
	consume := func(n int) { off += n; st.pos += int64(n) }
	var out []webmUnit
scan:
	for {
		if st.skip > 0 {
			n := int(min(st.skip, int64(len(buf)-off)))
			consume(n)
			st.skip -= int64(n)
			if st.skip > 0 {
				break
			}
		}
		if st.inCluster && st.clusterEnd >= 0 && st.pos >= st.clusterEnd {
			st.inCluster = false
		}
		if st.phase >= inHeader && st.segEnd >= 0 && st.pos >= st.segEnd {
			out = st.endSegment(out)
		}
		rest := buf[off:]
		if st.phase == wantEBML && !bytes.HasPrefix(rest, []byte(ebmlMagic[:min(4, len(rest))])) {
			return nil, notWebM("no EBML header where a WebM stream starts")
		}
		h, ok, err := readHeader(rest)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if st.inCluster && st.clusterEnd < 0 && endsCluster(h.id) {
			st.inCluster = false
		}
		act, err := st.action(h)
		if err != nil {
			return nil, err
		}
		if act != actDescend && act != actRestart && h.size < 0 {
			return nil, notWebM("element 0x%X of unknown size", h.id)
		}
		if end := st.pos + int64(h.len) + h.size; h.size >= 0 && !st.fits(end) {
			return nil, notWebM("element 0x%X overruns its parent", h.id)
		}
		switch act {
		case actSkip:
			consume(h.len)
			st.skip = h.size
		case actWhole:
			if h.size > maxWebMElement {
				return nil, notWebM("element 0x%X of %d bytes, more than the %d allowed", h.id, h.size, maxWebMElement)
			}
			if len(rest) < h.len+int(h.size) {
				break scan
			}
			el := rest[:h.len+int(h.size)]
			if out, err = st.take(h, el, out); err != nil {
				return nil, err
			}
			consume(len(el))
		case actDescend:
			st.open(h)
			consume(h.len)
		case actRestart:
			out = st.endSegment(out)
		}
	}
	st.carry = buf[off:]
	if len(st.carry) == 0 {
		st.carry = nil
	}
	return out, nil
}

// fits tells whether an element ending at end stays inside its parents.
func (st *webmState) fits(end int64) bool {
	if st.inCluster && st.clusterEnd >= 0 && end > st.clusterEnd {
		return false
	}
	return st.phase < inHeader || st.segEnd < 0 || end <= st.segEnd
}

// action decides what to do with the element whose header is h.
func (st *webmState) action(h elemHeader) (webmAction, error) {
	switch st.phase {
	case wantEBML:
		return actWhole, nil // readHeader and the magic check saw idEBML
	case wantSegment:
		if h.id != idSegment {
			return 0, notWebM("element 0x%X where the Segment should start", h.id)
		}
		return actDescend, nil
	}
	if st.inCluster {
		switch h.id {
		case idTimecode, idSimpleBlock, idBlockGroup:
			return actWhole, nil
		}
		return actSkip, nil
	}
	switch h.id {
	case idCluster:
		if st.phase == inHeader && st.tracks == nil {
			return 0, notWebM("a Cluster before the Tracks")
		}
		return actDescend, nil
	case idInfo, idTracks:
		if st.phase == inHeader {
			return actWhole, nil
		}
	case idEBML:
		return actRestart, nil // a recorder that started again
	case idSegment:
		return 0, notWebM("a Segment inside a Segment")
	}
	return actSkip, nil
}

// open enters a Segment or a Cluster whose header is h, at st.pos.
func (st *webmState) open(h elemHeader) {
	end := int64(-1)
	if h.size >= 0 {
		end = st.pos + int64(h.len) + h.size
	}
	if h.id == idSegment {
		*st = webmState{phase: inHeader, carry: st.carry, pos: st.pos, segEnd: end, scale: int64(time.Millisecond), ebml: st.ebml, lastGap: st.lastGap}
		st.init = append(slices.Clip(st.ebml), segmentHead...)
		return
	}
	if st.phase == inHeader {
		st.phase = inMedia
		st.initOut, st.init = st.init[:len(st.init):len(st.init)], nil
	}
	st.inCluster, st.clusterEnd = true, end
	st.resume = []byte(clusterHead)
	st.pending, st.opened = st.resume, true
	st.clusterTime = 0
}

// take handles a whole element el whose header is h.
func (st *webmState) take(h elemHeader, el []byte, out []webmUnit) ([]webmUnit, error) {
	payload := el[h.len:]
	switch h.id {
	case idEBML:
		if err := checkEBMLHeader(payload); err != nil {
			return nil, err
		}
		st.ebml = append([]byte(nil), el...)
		st.phase = wantSegment
	case idInfo, idTracks:
		var err error
		if h.id == idInfo {
			st.scale, err = parseTimecodeScale(payload)
		} else {
			st.tracks, st.timing, err = parseTracks(payload)
		}
		if err != nil {
			return nil, err
		}
		if len(st.init)+len(el) > maxWebMElement {
			return nil, notWebM("more than %d bytes of Info and Tracks", maxWebMElement)
		}
		st.init = append(st.init, el...)
	case idTimecode:
		v, err := readUint(payload)
		if err != nil {
			return nil, err
		}
		// The latest Timecode replaces any before it, so repeats cannot pile up.
		st.clusterTime = int64(min(v, 1<<40))
		st.resume = append([]byte(clusterHead), el...)
		if st.opened {
			st.pending = st.resume
		} else {
			st.pending = slices.Clone(el)
		}
	case idSimpleBlock, idBlockGroup:
		return st.unit(h, el, out)
	}
	return out, nil
}

// unit makes the unit of a block element el and decides its duration.
func (st *webmState) unit(h elemHeader, el []byte, out []webmUnit) ([]webmUnit, error) {
	var blk webmBlock
	var err error
	if h.id == idSimpleBlock {
		blk, err = parseBlock(el[h.len:])
	} else {
		blk, err = parseBlockGroup(el[h.len:])
	}
	if err != nil {
		return nil, err
	}
	u := webmUnit{data: make([]byte, 0, len(st.pending)+len(el)), init: st.initOut}
	u.data = append(append(u.data, st.pending...), el...)
	if !st.opened {
		u.resume = st.resume
	}
	st.pending, st.opened, st.initOut = nil, false, nil

	t, ok := st.tracks[blk.track]
	if !ok || blk.track != st.timing {
		if len(st.held) > 0 {
			return st.hold(u, out), nil
		}
		return append(out, u), nil
	}
	at := st.clusterTime + int64(blk.timecode)
	if len(st.held) > 0 {
		gap := ticksDur(at-st.heldAt, st.scale)
		st.lastGap = gap
		out = st.release(out, gap)
	}
	switch {
	case t.opus:
		for _, f := range blk.frames {
			u.dur += opusDuration(f)
		}
	case t.defaultDur > 0:
		u.dur = t.defaultDur * time.Duration(len(blk.frames))
	case blk.duration >= 0:
		u.dur = ticksDur(blk.duration, st.scale)
	default:
		st.heldAt = at
		return st.hold(u, out), nil
	}
	return append(out, u), nil
}

// maxBlockDur bounds the audio one block is taken to carry: no codec's
// frame comes near it, and a bound keeps a hostile duration from
// overflowing the session's counts.
const maxBlockDur = time.Minute

// ticksDur is n timecode ticks of scale nanoseconds, within [0, maxBlockDur].
func ticksDur(n, scale int64) time.Duration {
	if n <= 0 {
		return 0
	}
	if n > int64(maxBlockDur)/scale {
		return maxBlockDur
	}
	return time.Duration(n * scale)
}

// hold queues u behind the unit waiting for its duration; past the bound,
// that unit gets the last measured duration instead.
func (st *webmState) hold(u webmUnit, out []webmUnit) []webmUnit {
	st.held = append(st.held, u)
	st.heldBytes += len(u.data)
	if st.heldBytes > maxWebMHeld {
		out = st.release(out, st.lastGap)
	}
	return out
}

// release appends the held units to out, the first with duration dur.
func (st *webmState) release(out []webmUnit, dur time.Duration) []webmUnit {
	if len(st.held) == 0 {
		return out
	}
	first := st.held[0]
	first.dur = dur
	out = append(append(out, first), st.held[1:]...)
	st.held, st.heldBytes = nil, 0
	return out
}

// endSegment closes the segment: what it held goes out, and the stream
// must go on with an EBML header.
func (st *webmState) endSegment(out []webmUnit) []webmUnit {
	out = st.release(out, st.lastGap)
	*st = webmState{phase: wantEBML, carry: st.carry, pos: st.pos, lastGap: st.lastGap}
	return out
}
