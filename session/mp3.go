package session

import (
	"bytes"
	"time"
)

// MP3 frame scanning. Clients send MP3 in pieces that rarely respect frame
// boundaries, and many send every chunk as a complete little file (ID3v2 tag,
// a Xing/Info header frame, audio, an ID3v1 tag). ffmpeg would decode the tags
// as garbage and the Xing frames as silence, so the scanner hands ffmpeg
// whole audio frames only: it carries a cut frame over to the next write,
// drops tags and header frames, and counts the audio it passed.

// frameHeader is a decoded MPEG audio layer III frame header.
type frameHeader struct {
	raw        [4]byte
	version    byte // 1, 2, or 25 for MPEG 2.5
	sampleRate int
	mono       bool
	protected  bool // a 16-bit CRC follows the header
	length     int  // bytes, header included
	samples    int  // per channel
}

var (
	bitratesV1  = [16]int{0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0}
	bitratesV2  = [16]int{0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0}
	sampleRates = map[byte][3]int{1: {44100, 48000, 32000}, 2: {22050, 24000, 16000}, 25: {11025, 12000, 8000}}
)

// maxFrameLen bounds how much a scanner carries: the longest layer III frame
// is MPEG-1 320 kbps at 32 kHz (1440 bytes + padding) or MPEG-2 160 kbps at
// 8 kHz (1440 + padding).
const maxFrameLen = 1441

// parseHeader decodes the 4 bytes at b. Free-format frames (bitrate index 0)
// and reserved values are refused: they are what random bytes look like.
func parseHeader(b []byte) (frameHeader, bool) {
	if len(b) < 4 || b[0] != 0xFF || b[1]&0xE0 != 0xE0 {
		return frameHeader{}, false
	}
	var h frameHeader
	copy(h.raw[:], b[:4])
	switch (b[1] >> 3) & 3 {
	case 0:
		h.version = 25
	case 2:
		h.version = 2
	case 3:
		h.version = 1
	default:
		return h, false
	}
	if (b[1]>>1)&3 != 1 { // layer III only
		return h, false
	}
	h.protected = b[1]&1 == 0
	bi, si := b[2]>>4, (b[2]>>2)&3
	if bi == 0 || bi == 15 || si == 3 || b[3]&3 == 2 {
		return h, false
	}
	h.sampleRate = sampleRates[h.version][si]
	h.mono = b[3]>>6 == 3
	pad := int((b[2] >> 1) & 1)
	if h.version == 1 {
		h.length = 144*bitratesV1[bi]*1000/h.sampleRate + pad
		h.samples = 1152
	} else {
		h.length = 72*bitratesV2[bi]*1000/h.sampleRate + pad
		h.samples = 576
	}
	return h, true
}

// sideInfoLen is the size of the side information after the header.
func (h frameHeader) sideInfoLen() int {
	switch {
	case h.version == 1 && h.mono:
		return 17
	case h.version == 1:
		return 32
	case h.mono:
		return 9
	default:
		return 17
	}
}

// duration is the audio one frame carries.
func (h frameHeader) duration() time.Duration {
	return time.Duration(h.samples) * time.Second / time.Duration(h.sampleRate)
}

// sameStream tells whether two headers can be neighbours in one stream.
func sameStream(a, b frameHeader) bool {
	return a.version == b.version && a.sampleRate == b.sampleRate && a.mono == b.mono
}

// isInfoFrame tells a Xing/Info/VBRI header frame (an encoder's table of
// contents, decoded as silence) from an audio frame.
func isInfoFrame(frame []byte, h frameHeader) bool {
	off := 4 + h.sideInfoLen()
	if h.protected {
		off += 2
	}
	if len(frame) >= off+4 {
		if tag := string(frame[off : off+4]); tag == "Xing" || tag == "Info" {
			return true
		}
	}
	return len(frame) >= 40 && string(frame[36:40]) == "VBRI"
}

// id3v2Len returns the total length of an ID3v2 tag starting at b, 0 if b
// does not start one, or -1 if more bytes are needed to tell.
func id3v2Len(b []byte) int {
	if len(b) < 10 {
		if bytes.HasPrefix([]byte("ID3"), b[:min(len(b), 3)]) {
			return -1
		}
		return 0
	}
	if string(b[:3]) != "ID3" || b[3] == 0xFF || b[4] == 0xFF ||
		b[6]|b[7]|b[8]|b[9] >= 0x80 {
		return 0
	}
	n := 10 + (int(b[6])<<21 | int(b[7])<<14 | int(b[8])<<7 | int(b[9]))
	if b[5]&0x10 != 0 { // footer present
		n += 10
	}
	return n
}

// notMP3Limit is how many bytes at the start of a stream may pass without
// a frame before the stream is refused as not MP3: more than the longest
// frame, so a stream that starts mid-frame is still accepted.
const notMP3Limit = 4 * maxFrameLen

// ScanStats counts what a scanner has seen.
type ScanStats struct {
	Frames   int64
	Audio    time.Duration // audio passed on
	Stripped int64         // bytes of tags and header frames removed
	Garbage  int64         // bytes skipped while looking for a frame
}

// mp3Scanner is not safe for concurrent use; the session's writer owns it.
type mp3Scanner struct {
	carry  []byte      // bytes held back: a cut frame, or a candidate to confirm
	skip   int         // bytes of a tag still to drop
	synced bool        // the carry starts at a frame boundary we trust
	last   frameHeader // the last frame passed on
	// formatChanged: feed stopped at the first frame of a stream with
	// another sample rate, MPEG version or channel mode; the caller
	// restarts its decoder and calls feed(nil) for the rest.
	formatChanged bool
	formatPending bool   // formatChanged was reported for the frame at the carry's start
	out           []byte // reused output buffer
	stats         ScanStats
	// startGarbage counts bytes skipped before the first frame.
	startGarbage int
}

// started tells whether any audio frame has been passed on.
func (s *mp3Scanner) started() bool { return s.stats.Frames > 0 }

// feed scans p (after whatever was carried) and returns the whole audio
// frames it completes. The returned slice is valid until the next call.
// A write that is nothing but bytes that are not MP3, or a stream that
// shows no frame in its first notMP3Limit bytes, gets ErrNotMP3; a stream
// that had not started is reset so the refused bytes leave no trace.
func (s *mp3Scanner) feed(p []byte) ([]byte, error) {
	startedBefore := s.started()
	s.carry = append(s.carry, p...)
	buf := s.carry
	out := s.out[:0]
	i := 0
	garbage := 0
	for i < len(buf) {
		if s.skip > 0 {
			n := min(s.skip, len(buf)-i)
			s.skip -= n
			s.stats.Stripped += int64(n)
			i += n
			continue
		}
		rem := buf[i:]
		if n := id3v2Len(rem); n < 0 {
			break // maybe a tag: wait for its header
		} else if n > 0 {
			s.skip = n
			continue
		}
		if s.synced && len(rem) >= 3 && string(rem[:3]) == "TAG" {
			s.skip = 128 // ID3v1 at the end of a chunk-sized file
			continue
		}
		if s.synced && len(rem) < 3 && bytes.HasPrefix([]byte("TAG"), rem) {
			break // an ID3v1 tag may be cut here
		}
		h, ok := parseHeader(rem)
		if len(rem) < 4 && (len(rem) == 0 || rem[0] == 0xFF) {
			break // a header may be cut here
		}
		if ok && !s.synced {
			// Confirm a candidate with the header that should follow it
			// (or a tag, when every chunk is a small file): random bytes
			// pass one header check far more often than two.
			if len(rem) < h.length+4 {
				break // wait for the next header; h.length <= maxFrameLen bounds this
			} else if next, ok2 := parseHeader(rem[h.length:]); !ok2 || !sameStream(h, next) {
				// The next thing may also be a tag of a chunk-sized file.
				if id3v2Len(rem[h.length:]) == 0 && string(rem[h.length:h.length+3]) != "TAG" {
					ok = false
				}
			}
			s.synced = ok
		}
		if !ok {
			s.synced = false
			skipped := toNextSync(rem)
			garbage += skipped
			i += skipped
			continue
		}
		if len(rem) < h.length {
			break // the rest of this frame comes with the next write
		}
		frame := rem[:h.length]
		if isInfoFrame(frame, h) {
			i += h.length
			s.stats.Stripped += int64(h.length)
			continue
		}
		if s.stats.Frames > 0 && !sameStream(h, s.last) {
			if len(out) > 0 || !startedBefore || !s.formatPending {
				// Hand over what came before; the caller restarts.
				s.formatChanged = true
				s.formatPending = true
				break
			}
		}
		s.formatPending = false
		i += h.length
		out = append(out, frame...)
		s.last = h
		s.stats.Frames++
		s.stats.Audio += h.duration()
	}
	if len(out) == 0 && garbage > 0 {
		// Nothing but garbage in this write (nothing held back either),
		// or too much of it at the start of a stream: refuse the write.
		pending := len(buf) - i
		s.startGarbage += garbage
		if (pending == 0 && s.skip == 0) || (!startedBefore && s.startGarbage > notMP3Limit) {
			if !startedBefore {
				*s = mp3Scanner{out: out}
			} else {
				s.carry = s.carry[:0]
			}
			return nil, ErrNotMP3
		}
	}
	s.stats.Garbage += int64(garbage)
	// Keep the unconsumed tail at the front of carry for the next call.
	s.carry = append(s.carry[:0], buf[i:]...)
	s.out = out
	return out, nil
}

// flush returns a last whole frame still held for confirmation, when the
// stream ends; a cut frame is dropped (ffmpeg could not decode it either).
func (s *mp3Scanner) flush() []byte {
	h, ok := parseHeader(s.carry)
	if !ok || len(s.carry) < h.length || s.skip > 0 {
		s.carry = s.carry[:0]
		return nil
	}
	frame := s.carry[:h.length]
	s.carry = s.carry[:0]
	if isInfoFrame(frame, h) {
		return nil
	}
	s.stats.Frames++
	s.stats.Audio += h.duration()
	return frame
}

// MP3Duration returns the audio in data as the session would count it:
// whole layer III frames, tags and header frames left out.
func MP3Duration(data []byte) time.Duration {
	var s mp3Scanner
	if _, err := s.feed(data); err != nil {
		return 0
	}
	s.flush()
	return s.stats.Audio
}

// silentFrame returns a frame of digital silence in h's stream format: the
// lowest bitrate, no CRC, side information and main data all zero (no
// Huffman data, so every sample decodes to 0).
func silentFrame(h frameHeader) []byte {
	hdr := []byte{0xFF, h.raw[1] | 1, 0x10 | h.raw[2]&0x0C, h.raw[3] & 0xC0}
	sh, ok := parseHeader(hdr)
	if !ok {
		return nil
	}
	f := make([]byte, sh.length)
	copy(f, hdr)
	return f
}

// mustParse parses a frame built by this package.
func mustParse(frame []byte) frameHeader {
	h, _ := parseHeader(frame)
	return h
}

// toNextSync is how far to skip over rem's first byte to the next byte
// that may begin a frame (0xFF), or all of rem.
func toNextSync(rem []byte) int {
	if j := bytes.IndexByte(rem[1:], 0xFF); j >= 0 {
		return j + 1
	}
	return len(rem)
}
