package session

import (
	"errors"
	"fmt"
	"time"
)

// EBML and Matroska parsing for the WebM scanner: element headers, the
// Tracks and Info it needs, and the audio a block carries.

// ErrNotWebM refuses a WebM stream the scanner cannot follow; the error
// returned wraps it with the reason, which is meant for the client.
var ErrNotWebM = errors.New("data is not WebM audio")

func notWebM(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotWebM, fmt.Sprintf(format, args...))
}

// Element IDs, with their length marker, as the Matroska spec writes them.
const (
	idEBML            = 0x1A45DFA3
	idDocType         = 0x4282
	idSegment         = 0x18538067
	idSeekHead        = 0x114D9B74
	idInfo            = 0x1549A966
	idTimecodeScale   = 0x2AD7B1
	idTracks          = 0x1654AE6B
	idTrackEntry      = 0xAE
	idTrackNumber     = 0xD7
	idTrackType       = 0x83
	idCodecID         = 0x86
	idDefaultDuration = 0x23E383
	idAudio           = 0xE1
	idChannels        = 0x9F
	idCluster         = 0x1F43B675
	idTimecode        = 0xE7
	idSimpleBlock     = 0xA3
	idBlockGroup      = 0xA0
	idBlock           = 0xA1
	idBlockDuration   = 0x9B
	idCues            = 0x1C53BB6B
	idTags            = 0x1254C367
	idChapters        = 0x1043A770
	idAttachments     = 0x1941A469
)

// unknownSize is the 8-byte "size unknown" MediaRecorder writes for Segment
// and Cluster; the scanner writes these heads for every Segment and Cluster
// it passes on, so dropped children never make a size wrong.
const (
	unknownSize = "\x01\xFF\xFF\xFF\xFF\xFF\xFF\xFF"
	segmentHead = "\x18\x53\x80\x67" + unknownSize
	clusterHead = "\x1F\x43\xB6\x75" + unknownSize
)

// endsCluster tells the IDs that close a Cluster of unknown size: the
// Segment's other children, and the EBML header of a next segment.
func endsCluster(id uint32) bool {
	switch id {
	case idCluster, idCues, idTags, idSeekHead, idInfo, idTracks, idChapters, idAttachments, idEBML, idSegment:
		return true
	}
	return false
}

// elemHeader is an element's ID and size; size < 0 means unknown.
type elemHeader struct {
	id   uint32
	size int64
	len  int // bytes of ID and size
}

// readHeader parses the element header at b. ok is false when b is too
// short to tell; err is set for bytes that cannot start an element.
func readHeader(b []byte) (h elemHeader, ok bool, err error) {
	if len(b) == 0 {
		return h, false, nil
	}
	idLen := vintLen(b[0])
	if idLen == 0 || idLen > 4 {
		return h, false, notWebM("invalid element ID byte 0x%02x", b[0])
	}
	if len(b) <= idLen {
		return h, false, nil
	}
	for _, c := range b[:idLen] {
		h.id = h.id<<8 | uint32(c)
	}
	sizeLen := vintLen(b[idLen])
	if sizeLen == 0 {
		return h, false, notWebM("invalid element size in element 0x%X", h.id)
	}
	if len(b) < idLen+sizeLen {
		return h, false, nil
	}
	v, unknown := vintValue(b[idLen : idLen+sizeLen])
	h.size = int64(v)
	if unknown {
		h.size = -1
	} else if h.size < 0 {
		return h, false, notWebM("element 0x%X is impossibly large", h.id)
	}
	h.len = idLen + sizeLen
	return h, true, nil
}

// vintLen is the length of the variable-size integer whose first byte is
// c: one plus its leading zero bits, 0 for 0x00 (longer than 8 bytes).
func vintLen(c byte) int {
	for n := 1; n <= 8; n++ {
		if c&(0x80>>(n-1)) != 0 {
			return n
		}
	}
	return 0
}

// vintValue decodes b (a whole vint) without its marker; all value bits
// set means "unknown".
func vintValue(b []byte) (v uint64, unknown bool) {
	v = uint64(b[0]) & (0xFF >> len(b))
	all := v == 0xFF>>len(b)
	for _, c := range b[1:] {
		v = v<<8 | uint64(c)
		all = all && c == 0xFF
	}
	return v, all
}

// children calls fn for each child of a payload whose children all have
// known sizes that fit in it.
func children(p []byte, fn func(id uint32, data []byte) error) error {
	for len(p) > 0 {
		h, ok, err := readHeader(p)
		if err != nil {
			return err
		}
		if !ok || h.size < 0 || h.size > int64(len(p)-h.len) {
			return notWebM("element 0x%X overruns its parent", h.id)
		}
		if err := fn(h.id, p[h.len:h.len+int(h.size)]); err != nil {
			return err
		}
		p = p[h.len+int(h.size):]
	}
	return nil
}

func readUint(b []byte) (uint64, error) {
	if len(b) > 8 {
		return 0, notWebM("an unsigned integer of %d bytes", len(b))
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// checkEBMLHeader accepts the DocTypes ffmpeg's Matroska demuxer reads.
func checkEBMLHeader(p []byte) error {
	return children(p, func(id uint32, data []byte) error {
		if id == idDocType && string(data) != "webm" && string(data) != "matroska" {
			return notWebM("DocType %q", data)
		}
		return nil
	})
}

// webmTrack is what the scanner needs of a TrackEntry.
type webmTrack struct {
	number     uint64
	audio      bool
	opus       bool
	defaultDur time.Duration // 0 when absent
	channels   uint64        // 0 when absent (1 by the spec)
}

// parseTracks returns the tracks and the first audio track, whose blocks
// carry the stream's duration.
func parseTracks(p []byte) (tracks map[uint64]webmTrack, timing uint64, err error) {
	tracks = map[uint64]webmTrack{}
	err = children(p, func(id uint32, entry []byte) error {
		if id != idTrackEntry {
			return nil
		}
		var t webmTrack
		var trackType uint64
		err := children(entry, func(id uint32, data []byte) (err error) {
			switch id {
			case idTrackNumber:
				t.number, err = readUint(data)
			case idTrackType:
				trackType, err = readUint(data)
			case idCodecID:
				t.opus = string(data) == "A_OPUS"
				t.audio = t.audio || len(data) > 2 && string(data[:2]) == "A_"
			case idDefaultDuration:
				var ns uint64
				ns, err = readUint(data)
				t.defaultDur = time.Duration(min(ns, uint64(time.Minute)))
			case idAudio:
				err = children(data, func(id uint32, data []byte) (err error) {
					if id == idChannels {
						t.channels, err = readUint(data)
					}
					return err
				})
			}
			return err
		})
		t.audio = t.audio || trackType == 2
		if err == nil && t.audio && timing == 0 {
			timing = t.number
		}
		tracks[t.number] = t
		return err
	})
	if err == nil && timing == 0 {
		err = notWebM("no audio track")
	}
	return tracks, timing, err
}

// parseTimecodeScale reads Info's TimecodeScale: nanoseconds per tick.
func parseTimecodeScale(p []byte) (int64, error) {
	scale := int64(time.Millisecond)
	err := children(p, func(id uint32, data []byte) error {
		if id != idTimecodeScale {
			return nil
		}
		v, err := readUint(data)
		if v == 0 || v > uint64(time.Second) {
			return notWebM("TimecodeScale %d", v)
		}
		scale = int64(v)
		return err
	})
	return scale, err
}

// webmBlock is a parsed Block or SimpleBlock.
type webmBlock struct {
	track    uint64
	timecode int16    // relative to the cluster's
	frames   [][]byte // the laced frames, or the one frame
	duration int64    // BlockDuration in ticks, -1 when absent
}

// parseBlockGroup finds the Block and BlockDuration of a BlockGroup.
func parseBlockGroup(p []byte) (webmBlock, error) {
	var blk webmBlock
	found := false
	dur := int64(-1)
	err := children(p, func(id uint32, data []byte) (err error) {
		switch id {
		case idBlock:
			found = true
			blk, err = parseBlock(data)
		case idBlockDuration:
			var v uint64
			v, err = readUint(data)
			dur = int64(min(v, 1<<40))
		}
		return err
	})
	if err == nil && !found {
		err = notWebM("BlockGroup without a Block")
	}
	blk.duration = dur
	return blk, err
}

// parseBlock parses the payload of a Block or SimpleBlock, lacing included.
func parseBlock(p []byte) (webmBlock, error) {
	blk := webmBlock{duration: -1}
	n := 0
	if len(p) > 0 {
		n = vintLen(p[0])
	}
	if n == 0 || len(p) < n+3 {
		return blk, notWebM("a block too short for its header")
	}
	blk.track, _ = vintValue(p[:n])
	blk.timecode = int16(uint16(p[n])<<8 | uint16(p[n+1]))
	lacing := (p[n+2] >> 1) & 3
	p = p[n+3:]
	if lacing == 0 {
		blk.frames = [][]byte{p}
		return blk, nil
	}
	if len(p) == 0 {
		return blk, notWebM("a laced block without a frame count")
	}
	count := int(p[0]) + 1
	p = p[1:]
	sizes := make([]int, count-1)
	switch lacing {
	case 1: // Xiph: each size a run of 255s and a last byte
		for i := range sizes {
			for {
				if len(p) == 0 {
					return blk, notWebM("a cut Xiph lace")
				}
				c := p[0]
				sizes[i] += int(c)
				p = p[1:]
				if c != 255 {
					break
				}
			}
		}
	case 3: // EBML: the first size, then signed differences
		prev := 0
		for i := range sizes {
			if len(p) == 0 || vintLen(p[0]) == 0 || len(p) < vintLen(p[0]) {
				return blk, notWebM("a cut EBML lace")
			}
			l := vintLen(p[0])
			v, _ := vintValue(p[:l])
			size := int(v)
			if i > 0 {
				size = prev + size - (1<<(7*l-1) - 1)
			}
			if size < 0 || size > len(p) {
				return blk, notWebM("an EBML lace size out of range")
			}
			sizes[i], prev, p = size, size, p[l:]
		}
	case 2: // fixed: equal sizes
		if len(p)%count != 0 {
			return blk, notWebM("a fixed lace that does not divide")
		}
		for i := range sizes {
			sizes[i] = len(p) / count
		}
	}
	for _, size := range sizes {
		if size > len(p) {
			return blk, notWebM("laced frames overrun their block")
		}
		blk.frames = append(blk.frames, p[:size])
		p = p[size:]
	}
	blk.frames = append(blk.frames, p)
	return blk, nil
}

// opusDuration is the audio of one Opus packet from its TOC byte (RFC 6716
// §3.1): the configuration gives the frame size, the code the frame count.
// An empty or cut packet carries nothing, nor one over the 120 ms a packet
// may hold: counted, it would stretch the timeline and the lag it shows.
func opusDuration(pkt []byte) time.Duration {
	if len(pkt) == 0 {
		return 0
	}
	config := pkt[0] >> 3
	var frame time.Duration
	switch {
	case config < 12: // SILK: 10, 20, 40, 60 ms
		frame = [4]time.Duration{10, 20, 40, 60}[config%4] * time.Millisecond
	case config < 16: // hybrid: 10, 20 ms
		frame = [2]time.Duration{10, 20}[config%2] * time.Millisecond
	default: // CELT: 2.5, 5, 10, 20 ms
		frame = [4]time.Duration{2500, 5000, 10000, 20000}[config%4] * time.Microsecond
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
	if d := time.Duration(pkt[1]&0x3F) * frame; d <= maxOpusAudio {
		return d
	}
	return 0
}

// maxOpusAudio is the most audio one Opus packet may carry (RFC 6716 §3.2.5).
const maxOpusAudio = 120 * time.Millisecond
