package session

import (
	"fmt"
	"time"

	"ffmpeg-publisher/ffpipe"
)

// format is what the session knows of one input format: how to cut it
// into units (unitScanner), how an ffmpeg reads those units, and what
// silence sounds like in it. The session holds one per stream; it is
// used only by the holder of the writer lock.
type format interface {
	unitScanner
	// input is ffmpeg's -f for the bytes an attempt writes; "" keeps the
	// session's configured one.
	input() string
	// framer returns what wraps units for one new ffmpeg, or nil when
	// they go as they are.
	framer() framer
	// silence returns units of silence in the format of the last units
	// fed, lasting at least d; nil when the format has none (no gap fill).
	silence(d time.Duration) []unit
	// preroll is the log's pre-roll for a decoder starting mid-stream.
	preroll() prerollFunc
	// copyable tells whether u's stream can be published as it is
	// (-audio-codec copy) rather than encoded.
	copyable(u unit) bool
}

// framer wraps whole units for one ffmpeg's stdin; start begins its
// output (a new ffmpeg), with init, the segment's init data. Units carry
// their durations, which is what a framer times its output by. The result
// is valid until the next call.
type framer interface {
	frame(init []byte, units []unit, start bool) []byte
}

// newFormat returns the format of fc's input, named by InputFormat
// (ffmpeg's -f for it, or "pcm").
func newFormat(fc ffpipe.Config) format {
	switch fc.InputFormat {
	case "mp3":
		return &mp3Units{}
	case "webm":
		return &webmUnits{}
	case "aac":
		return &aacUnits{}
	case "opus":
		return &opusUnits{}
	case "pcm":
		return newPCMUnits(fc.SampleRate, fc.Channels)
	}
	return rawUnits{}
}

// forSource returns the configuration of a session for src's format.
func (c Config) forSource(src Source) (Config, error) {
	if src.Format == "" {
		return c, nil
	}
	c.FFmpeg.InputFormat = src.Format
	c.FFmpeg.SampleRate, c.FFmpeg.Channels = 0, 0
	if src.Format == "pcm" {
		if err := CheckPCM(src.Rate, src.Channels); err != nil {
			return c, err
		}
		c.FFmpeg.SampleRate, c.FFmpeg.Channels = src.Rate, src.Channels
	}
	return c, nil
}

// inputName names a session's input format for a refusal (ErrFormat).
func inputName(fc ffpipe.Config) string {
	if fc.SampleRate == 0 {
		return fc.InputFormat
	}
	return fmt.Sprintf("%s at %d Hz with %d channels", fc.InputFormat, fc.SampleRate, fc.Channels)
}

// MP3: frames in FLV tags (see flvFramer), silence in the last frame's
// format, copied where FLV can say the sample rate.

func (m *mp3Units) input() string        { return "flv" }
func (m *mp3Units) framer() framer       { return &flvFramer{} }
func (m *mp3Units) preroll() prerollFunc { return mp3Preroll }
func (m *mp3Units) copyable(u unit) bool {
	h, ok := parseHeader(u.data)
	if !ok {
		return false
	}
	switch h.sampleRate {
	case 44100, 22050, 11025:
		return true
	}
	return false
}

func (m *mp3Units) silence(d time.Duration) []unit {
	h := m.last
	if h.sampleRate == 0 {
		return nil
	}
	if m.silent == nil || !sameStream(h, mustParse(m.silent)) {
		m.silent = silentFrame(h)
	}
	dur := h.duration()
	units := make([]unit, int(d/dur)+1)
	for i := range units {
		units[i] = unit{data: m.silent, dur: dur, silence: true}
	}
	return units
}

// Raw: each write as it came, no silence, never copied.

func (rawUnits) input() string                { return "" }
func (rawUnits) framer() framer               { return nil }
func (rawUnits) silence(time.Duration) []unit { return nil }
func (rawUnits) preroll() prerollFunc         { return nil }
func (rawUnits) copyable(unit) bool           { return false }

// WebM: blocks retimed in a WebM of the session's own (see webmFramer),
// silence in silent Opus packets, never copied (FLV does not carry Opus).

func (w *webmUnits) input() string        { return "webm" }
func (w *webmUnits) framer() framer       { return &webmFramer{} }
func (w *webmUnits) preroll() prerollFunc { return webmPreroll }
func (w *webmUnits) copyable(unit) bool   { return false }

func (w *webmUnits) silence(d time.Duration) []unit {
	if w.silent == nil {
		return nil // not Opus: no silence
	}
	units := make([]unit, int(d/opusSilenceDur)+1)
	for i := range units {
		units[i] = unit{data: w.silent, dur: opusSilenceDur, silence: true}
	}
	return units
}
