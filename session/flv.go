package session

import (
	"encoding/binary"
)

// flvFramer wraps whole MP3 frames in FLV audio tags on their way to
// ffmpeg's stdin, one tag per frame.
//
// Why: ffmpeg's MP3 demuxer reads its input in 1024-byte packets and
// blocks until a packet is full, so the tail of every client write waited
// in ffmpeg for the next one (at 32 kbps, 256 ms of audio; measured: time
// to first audio 203 ms and a median lag of 303 ms with 100 ms writes of
// 16 kHz MP3). The FLV demuxer reads exactly one tag at a time, so every
// frame is decoded as soon as it is written (65 ms and 116 ms with the same
// input; with -audio-codec copy the lag is nil). What remains with AAC is
// the encoder's own lookahead of one to two AAC frames.
//
// A framer serves one ffmpeg: its timestamps count the audio written to
// that process from zero. Not safe for concurrent use; the holder of the
// session's writer lock owns it.
type flvFramer struct {
	samples int64 // per channel, written to this ffmpeg so far
	rate    int   // sample rate of those samples (fixed for one ffmpeg)
	buf     []byte
}

// flvHeader is an FLV file header saying "audio only", followed by the
// first PreviousTagSize (0).
var flvHeader = []byte{'F', 'L', 'V', 1, 0x04, 0, 0, 0, 9, 0, 0, 0, 0}

const flvTagOverhead = 11 + 1 + 4 // tag header, audio flags, PreviousTagSize

// frame returns units (whole MP3 frames, as the scanner passes them on)
// as FLV tags, preceded by the file header when start is set; MP3 has no
// init data. The result is valid until the next call.
func (f *flvFramer) frame(_ []byte, units []unit, start bool) []byte {
	out := f.buf[:0]
	if start {
		*f = flvFramer{}
		out = append(out, flvHeader...)
	}
	for i := range units {
		out = f.frames(out, units[i].data)
	}
	f.buf = out
	return out
}

// frames appends data's frames as tags, one a frame.
func (f *flvFramer) frames(out, data []byte) []byte {
	for len(data) > 0 {
		h, ok := parseHeader(data)
		n := h.length
		if !ok || n > len(data) {
			// Not a whole frame (the scanner never passes one): hand the
			// rest over in one tag; ffmpeg's MP3 parser finds its frames.
			n = len(data)
		}
		if ok && f.rate == 0 {
			f.rate = h.sampleRate
		}
		out = f.tag(out, data[:n], h)
		if ok && f.rate > 0 {
			f.samples += int64(h.samples)
		}
		data = data[n:]
	}
	return out
}

// tag appends one FLV audio tag holding frame.
func (f *flvFramer) tag(out, frame []byte, h frameHeader) []byte {
	var ms int64
	if f.rate > 0 {
		ms = f.samples * 1000 / int64(f.rate)
	}
	size := len(frame) + 1
	// Audio flags: MP3 (2), 16-bit, mono or stereo. The rate field only
	// says 44.1, 22.05 or 11.025 kHz; ffmpeg takes the real rate from the
	// frame headers, which is also what it writes with -c:a copy.
	flags := byte(2<<4 | 1<<1)
	switch h.sampleRate {
	case 44100, 48000, 32000:
		flags |= 3 << 2
	case 22050, 24000, 16000:
		flags |= 2 << 2
	default:
		flags |= 1 << 2
	}
	if !h.mono {
		flags |= 1
	}
	out = append(out, 8, byte(size>>16), byte(size>>8), byte(size),
		byte(ms>>16), byte(ms>>8), byte(ms), byte(ms>>24), // timestamp, then its high byte
		0, 0, 0, // stream id
		flags)
	out = append(out, frame...)
	return binary.BigEndian.AppendUint32(out, uint32(size+11))
}
