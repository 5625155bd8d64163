package session

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PCM input: signed 16-bit little-endian samples, channels interleaved,
// which says neither its rate nor its channels: the client names them and
// ffmpeg is told (-f s16le -ar -ac). Its raw demuxer hands on packets of
// at most 40 ms as they arrive, within the AAC encoder's own frame, so
// PCM needs no container for latency (BENCHMARKS.md has the numbers).

// PCMRates returns the sample rates accepted for PCM: those a WeChat
// recorder offers, all of which AAC encodes as they are.
func PCMRates() []int {
	return []int{8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}
}

// MaxPCMChannels: mono or stereo, what recorders give.
const MaxPCMChannels = 2

// PCMError refuses a PCM stream's parameters, naming the accepted ones.
type PCMError struct{ Rate, Channels int }

func (e *PCMError) Error() string {
	return fmt.Sprintf("PCM %s (not %d and %d)", PCMAccepted(), e.Rate, e.Channels) // fits a WebSocket close reason
}

// PCMAccepted lists the accepted PCM parameters, for refusals.
func PCMAccepted() string {
	rates := make([]string, 0, 9)
	for _, r := range PCMRates() {
		rates = append(rates, strconv.Itoa(r))
	}
	return "rate must be one of " + strings.Join(rates, ", ") + " and channels 1 or 2"
}

// CheckPCM tells whether rate and channels are an accepted PCM stream.
func CheckPCM(rate, channels int) error {
	if !slices.Contains(PCMRates(), rate) || channels < 1 || channels > MaxPCMChannels {
		return &PCMError{Rate: rate, Channels: channels}
	}
	return nil
}

// pcmUnit is the longest unit: short enough that a unit is never what
// delays the audio, long enough that the log holds few of them.
const pcmUnit = 20 * time.Millisecond

// pcmUnits cuts PCM into units of whole sample frames. The bytes of a
// frame cut by a write wait in carry for the rest, in the next write.
type pcmUnits struct {
	rate      int
	frameSize int // bytes per sample frame: 2 per channel
	carry     [2 * MaxPCMChannels]byte
	carried   int // bytes in carry, fewer than frameSize
	saved     struct {
		carry   [2 * MaxPCMChannels]byte
		carried int
	}
	silent []byte // one unit of zeros, shared by every silence unit
}

func newPCMUnits(rate, channels int) *pcmUnits {
	return &pcmUnits{rate: rate, frameSize: 2 * channels}
}

func (m *pcmUnits) mark()     { m.saved.carry, m.saved.carried = m.carry, m.carried }
func (m *pcmUnits) rollback() { m.carry, m.carried = m.saved.carry, m.saved.carried }

// dropCarry drops the part of a sample frame carried over: the next bytes
// do not follow the last ones (a seq gap, a new recording) and begin a
// frame of their own. rollback brings it back.
func (m *pcmUnits) dropCarry() { m.carried = 0 }

// unitFrames is how many sample frames a whole unit holds.
func (m *pcmUnits) unitFrames() int { return max(1, m.rate*int(pcmUnit/time.Millisecond)/1000) }

func (m *pcmUnits) dur(frames int) time.Duration {
	return time.Duration(frames) * time.Second / time.Duration(m.rate)
}

// feed never fails: any bytes are PCM. It copies the whole frames once
// (the log keeps them past the next feed) and cuts them into units.
func (m *pcmUnits) feed(p []byte) ([]unit, error) {
	total := m.carried + len(p)
	whole := total - total%m.frameSize
	if whole == 0 {
		m.carried += copy(m.carry[m.carried:], p)
		return nil, nil
	}
	buf := make([]byte, whole)
	n := copy(buf, m.carry[:m.carried])
	rest := p[copy(buf[n:], p):]
	m.carried = copy(m.carry[:], rest)
	step := m.unitFrames() * m.frameSize
	units := make([]unit, 0, (whole+step-1)/step)
	for len(buf) > 0 {
		k := min(step, len(buf))
		units = append(units, unit{data: buf[:k:k], dur: m.dur(k / m.frameSize)})
		buf = buf[k:]
	}
	return units, nil
}

// flush gives nothing: a part of a sample frame at the end plays nothing.
func (m *pcmUnits) flush() []unit { return nil }

func (m *pcmUnits) input() string        { return "s16le" }
func (m *pcmUnits) framer() framer       { return nil }
func (m *pcmUnits) preroll() prerollFunc { return nil } // each sample stands alone
func (m *pcmUnits) copyable(unit) bool   { return false }

// silence is zeros, in whole units.
func (m *pcmUnits) silence(d time.Duration) []unit {
	frames := m.unitFrames()
	if m.silent == nil {
		m.silent = make([]byte, frames*m.frameSize)
	}
	units := make([]unit, int(d/m.dur(frames))+1)
	for i := range units {
		units[i] = unit{data: m.silent, dur: m.dur(frames), silence: true}
	}
	return units
}
