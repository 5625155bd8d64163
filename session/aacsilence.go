package session

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// aacSilence makes one silent AAC frame per stream configuration, with the
// ffmpeg the server runs anyway, and keeps it for every stream of a
// registry: an AAC frame cannot be written by hand as an MP3 one can.
// Encoding runs in the background from the first frame of a configuration,
// so that neither a writer nor gap fill ever waits for it.
type aacSilence struct {
	binary string
	env    []string
	log    *logrus.Entry
	ctx    context.Context // ends with close: encodes stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // encodes running

	mu     sync.Mutex // guards the fields below
	frames map[adtsConfig]*silentAAC
	closed bool
}

// silentAAC is one configuration's frame; frame is nil until done is closed
// (and after, when encoding failed).
type silentAAC struct {
	done  chan struct{}
	frame []byte
}

// silenceEncodeTimeout bounds one encode: ffmpeg takes a fraction of a
// second, more on a loaded machine; past this, that configuration goes
// without gap fill.
const silenceEncodeTimeout = 10 * time.Second

func newAACSilence(binary string, env []string, log *logrus.Entry) *aacSilence {
	if binary == "" {
		binary = "ffmpeg"
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &aacSilence{binary: binary, env: env, log: log, ctx: ctx, cancel: cancel, frames: map[adtsConfig]*silentAAC{}}
}

// prepare starts encoding c's silent frame, unless it is cached or under
// way. It does not wait.
func (a *aacSilence) prepare(c adtsConfig) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.frames[c] != nil {
		return
	}
	e := &silentAAC{done: make(chan struct{})}
	a.frames[c] = e
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(e.done)
		f, err := a.encode(c)
		if err != nil {
			a.log.WithError(err).Warnf("no gap fill for AAC at %d Hz, channel configuration %d, profile %d", c.rate(), c.channels, c.profile)
			return
		}
		e.frame = f
	}()
}

// frame returns c's silent frame, or nil while it is being encoded (or when
// it could not be).
func (a *aacSilence) frame(c adtsConfig) []byte {
	a.mu.Lock()
	e := a.frames[c]
	a.mu.Unlock()
	if e == nil {
		a.prepare(c)
		return nil
	}
	select {
	case <-e.done:
		return e.frame
	default:
		return nil
	}
}

// close stops encodes under way and waits for them.
func (a *aacSilence) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
}

// aacEncoderProfiles names ffmpeg's encoder profile for each ADTS profile
// it can write (not SSR).
var aacEncoderProfiles = map[byte]string{0: "aac_main", 1: "aac_low", 3: "aac_ltp"}

// aacLayouts names ffmpeg's channel layout for each channel configuration.
// With 13 rates and 4 profiles, they bound the cache to a few hundred frames.
var aacLayouts = map[byte]string{1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "7.1"}

// silenceFrames is how many frames are encoded; one after the encoder's
// priming is kept.
const silenceFrames = 8

// encode runs ffmpeg on digital silence in configuration c and returns one
// of its frames past the encoder's priming, checked to be in c.
func (a *aacSilence) encode(c adtsConfig) ([]byte, error) {
	profile, layout := aacEncoderProfiles[c.profile], aacLayouts[c.channels]
	if profile == "" || layout == "" {
		return nil, fmt.Errorf("ffmpeg cannot encode this configuration")
	}
	ctx, cancel := context.WithTimeout(a.ctx, silenceEncodeTimeout)
	defer cancel()
	rate := strconv.Itoa(c.rate())
	cmd := exec.CommandContext(ctx, a.binary, "-hide_banner", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "anullsrc=r="+rate+":cl="+layout,
		"-frames:a", strconv.Itoa(silenceFrames), "-c:a", "aac", "-profile:a", profile, "-strict", "experimental", "-b:a", "32k", // LTP is experimental
		"-f", "adts", "pipe:1")
	cmd.Env = append(os.Environ(), a.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var sc adtsScanner
	frames, _ := sc.feed(out)
	frames = append(frames, sc.flush()...)
	var last []byte
	for n := 0; len(frames) > 0; n++ {
		h, _ := parseADTS(frames)
		if h.adtsConfig != c {
			return nil, fmt.Errorf("ffmpeg wrote another configuration (%+v)", h.adtsConfig)
		}
		last = frames[:h.length:h.length]
		frames = frames[h.length:]
		if n >= 2 {
			break // past the priming
		}
	}
	if last == nil {
		return nil, fmt.Errorf("ffmpeg wrote no AAC frame")
	}
	return bytes.Clone(last), nil
}
