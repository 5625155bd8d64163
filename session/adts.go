package session

import (
	"errors"
	"time"
)

// ADTS frame scanning. Apps (Android's MediaRecorder, iOS AudioToolbox) send
// AAC as ADTS: every frame starts with a header that says its length and
// the stream's configuration. The scanner hands on whole frames only,
// carrying a cut frame over to the next write and skipping junk between
// frames (a header is trusted once the next one confirms it, as for MP3).

// ErrNotAAC refuses a write that holds no ADTS frame.
var ErrNotAAC = errors.New("data is not AAC: no ADTS frame found")

// adtsConfig is what every frame of one AAC stream shares; a change is a
// new recording.
type adtsConfig struct {
	profile  byte // ADTS profile: the MPEG-4 audio object type minus 1 (1: AAC LC)
	rateIdx  byte // sampling_frequency_index
	channels byte // channel_configuration, 1 to 7
}

// adtsHeader is a decoded ADTS frame header.
type adtsHeader struct {
	adtsConfig
	crc    bool // protection_absent is 0: a 16-bit CRC follows the header
	length int  // bytes, header included
}

// adtsRates are the sample rates of sampling_frequency_index 0 to 12.
var adtsRates = [13]int{96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}

const (
	adtsSamples   = 1024 // per channel in one frame (one raw data block)
	adtsHeaderLen = 7
	maxADTSFrame  = 1<<13 - 1 // aac_frame_length is 13 bits
	// notAACLimit is how many bytes at the start of a stream may pass
	// without a frame: two of the longest, so a stream that starts
	// mid-frame is still accepted.
	notAACLimit = 2 * maxADTSFrame
)

// parseADTS decodes the header at b. Frames of several raw data blocks and
// channel configuration 0 (a layout in the payload) are refused: FLV carries
// one block per packet and a fixed configuration.
func parseADTS(b []byte) (adtsHeader, bool) {
	if len(b) < adtsHeaderLen || b[0] != 0xFF || b[1]&0xF6 != 0xF0 {
		return adtsHeader{}, false
	}
	h := adtsHeader{
		adtsConfig: adtsConfig{
			profile:  b[2] >> 6,
			rateIdx:  (b[2] >> 2) & 0x0F,
			channels: (b[2]&1)<<2 | b[3]>>6,
		},
		crc:    b[1]&1 == 0,
		length: int(b[3]&3)<<11 | int(b[4])<<3 | int(b[5])>>5,
	}
	if int(h.rateIdx) >= len(adtsRates) || h.channels == 0 || b[6]&3 != 0 || h.length <= h.headerLen() {
		return h, false
	}
	return h, true
}

// headerLen is the bytes before the raw data block.
func (h adtsHeader) headerLen() int {
	if h.crc {
		return adtsHeaderLen + 2
	}
	return adtsHeaderLen
}

func (c adtsConfig) rate() int { return adtsRates[c.rateIdx] }

// duration is the audio one frame carries.
func (c adtsConfig) duration() time.Duration {
	return time.Duration(adtsSamples) * time.Second / time.Duration(c.rate())
}

// asc is the AudioSpecificConfig (ISO 14496-3 1.6.2.1) FLV and MP4 carry
// instead of ADTS headers: object type, rate index, channels, 1024 samples.
func (c adtsConfig) asc() []byte {
	ot := c.profile + 1
	return []byte{ot<<3 | c.rateIdx>>1, (c.rateIdx&1)<<7 | c.channels<<3}
}

// adtsScanner is not safe for concurrent use; the session's writer owns it.
type adtsScanner struct {
	carry  []byte // bytes held back: a cut frame, or a candidate to confirm
	synced bool   // the carry starts at a frame boundary we trust
	last   adtsConfig
	frames int64
	// startGarbage counts bytes skipped before the first frame.
	startGarbage int
	out          []byte // reused output buffer
}

// feed scans p (after whatever was carried) and returns the whole frames it
// completes, valid until the next call. A write of nothing but junk, or a
// stream without a frame in its first notAACLimit bytes, gets ErrNotAAC; the
// caller rolls the scanner back.
func (s *adtsScanner) feed(p []byte) ([]byte, error) {
	s.carry = append(s.carry, p...)
	buf, out := s.carry, s.out[:0]
	i, garbage := 0, 0
	for i < len(buf) {
		rem := buf[i:]
		h, ok := parseADTS(rem)
		if !ok && len(rem) < adtsHeaderLen && mayStartADTS(rem) {
			break // a header may be cut here
		}
		if ok && !s.synced {
			// Confirm a candidate with the header that should follow it:
			// random bytes pass one check far more often than two.
			if len(rem) < h.length+adtsHeaderLen {
				break // wait for the next header; bounded by maxADTSFrame
			}
			next, ok2 := parseADTS(rem[h.length:])
			ok = ok2 && next.adtsConfig == h.adtsConfig
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
		i += h.length
		out = append(out, rem[:h.length]...)
		s.last = h.adtsConfig
		s.frames++
	}
	if len(out) == 0 && garbage > 0 {
		s.startGarbage += garbage
		if i == len(buf) || (s.frames == 0 && s.startGarbage > notAACLimit) {
			return nil, ErrNotAAC
		}
	}
	s.carry = append(s.carry[:0], buf[i:]...)
	s.out = out
	return out, nil
}

// mayStartADTS tells whether b, shorter than a header, could be the start
// of one.
func mayStartADTS(b []byte) bool {
	return len(b) == 0 || (b[0] == 0xFF && (len(b) < 2 || b[1]&0xF6 == 0xF0))
}

// flush returns a last whole frame still held for confirmation when the
// stream ends; a cut frame is dropped.
func (s *adtsScanner) flush() []byte {
	h, ok := parseADTS(s.carry)
	if !ok || len(s.carry) < h.length {
		s.carry = s.carry[:0]
		return nil
	}
	f := s.carry[:h.length]
	s.carry = s.carry[:0]
	s.last = h.adtsConfig
	s.frames++
	return f
}

// ADTSDuration returns the audio in data as the session would count it.
func ADTSDuration(data []byte) time.Duration {
	var s adtsScanner
	frames, err := s.feed(data)
	if err != nil {
		return 0
	}
	frames = append(frames, s.flush()...)
	var d time.Duration
	for len(frames) > 0 {
		h, _ := parseADTS(frames)
		d += h.duration()
		frames = frames[h.length:]
	}
	return d
}
