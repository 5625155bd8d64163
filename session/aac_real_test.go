package session

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/rtmptest"
)

// TestFFmpegCopiesAACFromFLV: the real ffmpeg, with the options every
// attempt runs with, reads the framer's FLV and writes every frame as it
// came, byte for byte, with the stream's own parameters, at rates FLV's
// flags cannot say.
func TestFFmpegCopiesAACFromFLV(t *testing.T) {
	rtmptest.Require(t, "ffmpeg", "ffprobe")
	for _, tc := range []struct {
		rate, channels int
		profile, want  string
	}{
		{16000, 1, "aac_low", "LC"},
		{48000, 2, "aac_low", "LC"},
		{8000, 1, "aac_main", "Main"},
		{24000, 6, "aac_ltp", "LTP"},
		{96000, 2, "aac_low", "LC"},
		{48000, 8, "aac_low", "LC"}, // 7.1: channel configuration 7
	} {
		t.Run(fmt.Sprint(tc.rate, tc.channels, tc.profile), func(t *testing.T) {
			t.Parallel()
			adts := rtmptest.ADTS(t, 1, tc.rate, tc.channels, tc.profile)
			var a aacUnits
			units, err := a.feed(adts)
			if err != nil {
				t.Fatal(err)
			}
			units = append(units, a.flush()...)
			var in []byte
			var payloads [][]byte
			for _, u := range units {
				in = append(in, u.data...)
				h, _ := parseADTS(u.data)
				payloads = append(payloads, u.data[h.headerLen():])
			}
			var f aacFramer
			out := filepath.Join(t.TempDir(), "out.flv")
			cfg := ffpipe.Config{InputFormat: "flv", AudioCodec: "copy", OutputFormat: "flv", Target: out}
			cmd := exec.Command("ffmpeg", ffpipe.Args(cfg)...)
			cmd.Stdin = bytes.NewReader(f.frame(nil, units, true))
			devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer devnull.Close()
			cmd.ExtraFiles = []*os.File{devnull} // -progress goes to fd 3
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("ffmpeg: %v\n%s", err, b)
			}
			p := rtmptest.ProbeAAC(t, out)
			if p.Codec != "aac" || p.Profile != tc.want || p.Rate != tc.rate || p.Channels != tc.channels {
				t.Errorf("recorded %+v", p)
			}
			got := rtmptest.AACPayloads(t, out)
			if len(got) != len(payloads) {
				t.Fatalf("%d frames out of %d in", len(got), len(payloads))
			}
			for i := range got {
				if !bytes.Equal(got[i], payloads[i]) {
					t.Fatalf("frame %d differs", i)
				}
			}
		})
	}
}

// TestAACSilenceIsEncodedOnceInTheStreamsConfiguration: the cache asks
// ffmpeg once per configuration, never blocks its callers, and gives a
// frame in exactly that configuration that decodes to silence.
func TestAACSilenceIsEncodedOnceInTheStreamsConfiguration(t *testing.T) {
	rtmptest.Require(t, "ffmpeg")
	c := newAACSilence("ffmpeg", nil, quietLog())
	defer c.close()
	configs := []adtsConfig{lc16Mono, lc44Stereo, {profile: 0, rateIdx: 11, channels: 1}, {profile: 1, rateIdx: 3, channels: 6}, {profile: 3, rateIdx: 6, channels: 2}}
	for ch := byte(3); ch <= 7; ch++ { // every layout
		configs = append(configs, adtsConfig{profile: 1, rateIdx: 3, channels: ch})
	}
	for _, cfg := range configs {
		if c.frame(cfg) != nil {
			t.Fatal("a frame before any encode")
		}
	}
	c.wg.Wait()
	for _, cfg := range configs {
		f := c.frame(cfg)
		h, ok := parseADTS(f)
		if !ok || h.adtsConfig != cfg || h.length != len(f) {
			t.Fatalf("%+v: frame %x", cfg, f)
		}
		// Decoded, a run of it is digital silence.
		in := bytes.Repeat(f, 10)
		cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "aac", "-i", "pipe:0", "-f", "s16le", "pipe:1")
		cmd.Stdin = bytes.NewReader(in)
		pcm, err := cmd.Output()
		if err != nil || len(pcm) == 0 {
			t.Fatalf("%+v: decode: %v", cfg, err)
		}
		for _, b := range pcm {
			if b != 0 {
				t.Fatalf("%+v: not silent", cfg)
			}
		}
	}
	e := c.frames[lc16Mono]
	c.prepare(lc16Mono)
	if c.frames[lc16Mono] != e {
		t.Error("encoded twice")
	}
	// SSR cannot be encoded: no silence, and no error for the stream.
	ssr := adtsConfig{profile: 2, rateIdx: 4, channels: 2}
	c.prepare(ssr)
	c.wg.Wait()
	if c.frame(ssr) != nil {
		t.Error("an SSR frame")
	}
}
