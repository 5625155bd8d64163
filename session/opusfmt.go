package session

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// Opus packets (format "opus"): what a WebRTC publisher receives, one RTP
// payload per packet. The bytes a writer hands the session are packets,
// each preceded by its length (AppendOpus); the session wraps each in a
// WebM SimpleBlock of a segment of its own (opusInit), so the same WebM
// framer, pre-roll and silence serve them as a MediaRecorder's blocks.

// ErrNotOpus refuses bytes that are not length-prefixed Opus packets.
var ErrNotOpus = errors.New("data is not length-prefixed Opus packets")

// maxOpusPacket bounds one packet: RFC 6716 allows 1275 bytes a frame, 48
// frames a packet; an RTP payload stays far below.
const maxOpusPacket = 1 << 14

// AppendOpus appends one Opus packet in the session's "opus" format.
func AppendOpus(dst, pkt []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(pkt)))
	return append(dst, pkt...)
}

// opusTrack is the track number of the session's Opus segment.
const opusTrack = 1

// opusUnits cuts length-prefixed packets into units, each a SimpleBlock.
type opusUnits struct {
	carry   []byte // a packet not whole yet
	started bool   // the init data went out with the first unit
	saved   struct {
		carry   []byte
		started bool
	}
}

func (o *opusUnits) mark() {
	o.saved.carry = append(o.saved.carry[:0], o.carry...)
	o.saved.started = o.started
}

func (o *opusUnits) rollback() {
	o.carry = append(o.carry[:0], o.saved.carry...)
	o.started = o.saved.started
}

func (o *opusUnits) feed(p []byte) ([]unit, error) {
	buf := append(o.carry, p...)
	var units []unit
	for len(buf) >= 2 {
		n := int(binary.BigEndian.Uint16(buf))
		if n > maxOpusPacket {
			return nil, ErrNotOpus
		}
		if len(buf) < 2+n {
			break
		}
		pkt := buf[2 : 2+n]
		buf = buf[2+n:]
		if n == 0 {
			continue // an empty payload carries nothing (RFC 7587 §3.2)
		}
		u := unit{data: opusBlock(pkt), dur: opusDuration(pkt)}
		if !o.started {
			u.newSeg, u.init, o.started = true, opusInit(), true
		}
		units = append(units, u)
	}
	o.carry = append([]byte(nil), buf...)
	return units, nil
}

// flush drops a cut packet: it cannot be played.
func (o *opusUnits) flush() []unit { return nil }

func (o *opusUnits) input() string        { return "webm" }
func (o *opusUnits) framer() framer       { return &webmFramer{} }
func (o *opusUnits) preroll() prerollFunc { return webmPreroll }
func (o *opusUnits) copyable(unit) bool   { return false }

func (o *opusUnits) silence(d time.Duration) []unit {
	if !o.started {
		return nil
	}
	block := silentBlock(opusTrack, false)
	units := make([]unit, int(d/opusSilenceDur)+1)
	for i := range units {
		units[i] = unit{data: block, dur: opusSilenceDur, silence: true}
	}
	return units
}

// opusBlock is a SimpleBlock of the Opus track holding pkt, a keyframe at
// relative timecode 0 (the framer sets it).
func opusBlock(pkt []byte) []byte {
	size := 1 + 2 + 1 + len(pkt) // track, timecode, flags
	b := make([]byte, 0, 3+size)
	b = append(b, idSimpleBlock, 0x40|byte(size>>8), byte(size))
	b = append(b, 0x80|opusTrack, 0, 0, 0x80)
	return append(b, pkt...)
}

// opusInit is the init data of the session's Opus segment: a WebM header
// with one stereo Opus track at 48 kHz (RTP's Opus is always declared
// 48000/2; a mono packet decodes to both channels).
func opusInit() []byte {
	head := []byte("OpusHead")
	head = append(head, 1, 2)                            // version, channels
	head = binary.LittleEndian.AppendUint16(head, 0)     // pre-skip: RTP has none
	head = binary.LittleEndian.AppendUint32(head, 48000) // input rate
	head = append(head, 0, 0, 0)                         // gain, mapping family 0

	ebml := ebmlElem(idEBML, concat(
		ebmlUint(0x4286, 1), ebmlUint(0x42F7, 1), ebmlUint(0x42F2, 4), ebmlUint(0x42F3, 8),
		ebmlElem(idDocType, []byte("webm")), ebmlUint(0x4287, 4), ebmlUint(0x4285, 2)))
	info := ebmlElem(idInfo, concat(ebmlUint(idTimecodeScale, uint64(time.Millisecond)),
		ebmlElem(0x4D80, []byte("ffmpeg-publisher")), ebmlElem(0x5741, []byte("ffmpeg-publisher"))))
	rate := binary.BigEndian.AppendUint64(nil, math.Float64bits(48000))
	track := ebmlElem(idTrackEntry, concat(
		ebmlUint(idTrackNumber, opusTrack), ebmlUint(0x73C5, 1), ebmlUint(idTrackType, 2),
		ebmlElem(idCodecID, []byte("A_OPUS")), ebmlElem(0x63A2, head),
		ebmlElem(idAudio, concat(ebmlElem(0xB5, rate), ebmlUint(idChannels, 2)))))
	return concat(ebml, []byte(segmentHead), info, ebmlElem(idTracks, track))
}

// ebmlElem is an element of id (its bytes as the spec writes them) with an
// 8-byte size.
func ebmlElem(id uint32, payload []byte) []byte {
	var b []byte
	for shift := 24; shift >= 0; shift -= 8 {
		if v := byte(id >> shift); v != 0 || len(b) > 0 {
			b = append(b, v)
		}
	}
	size := binary.BigEndian.AppendUint64(nil, uint64(len(payload)))
	b = append(append(b, 0x01), size[1:]...) // 0x01: a size in the next 7 bytes
	return append(b, payload...)
}

func ebmlUint(id uint32, v uint64) []byte {
	return ebmlElem(id, binary.BigEndian.AppendUint64(nil, v))
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
