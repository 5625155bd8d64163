package rtmptest

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// ADTS makes a sine tone of the given length as AAC in ADTS, as apps send
// it. profile is ffmpeg's -profile:a ("aac_low", "aac_main").
func ADTS(t testing.TB, seconds float64, rate, channels int, profile string) []byte {
	t.Helper()
	args := []string{"-hide_banner", "-loglevel", "error", "-f", "lavfi",
		"-i", fmt.Sprintf("sine=f=440:d=%g:r=%d", seconds, rate),
		"-ac", strconv.Itoa(channels), "-ar", strconv.Itoa(rate),
		"-c:a", "aac", "-profile:a", profile, "-strict", "experimental", "-b:a", strconv.Itoa(24*channels) + "k", "-f", "adts", "pipe:1"}
	var stderr bytes.Buffer
	cmd := exec.Command("ffmpeg", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, stderr.String())
	}
	return out
}

// AACParams are the codec parameters of a file's first audio stream, as
// ffprobe reports them.
type AACParams struct {
	Codec, Profile string
	Rate, Channels int
}

// ProbeAAC returns the codec parameters of file's first audio stream.
func ProbeAAC(t testing.TB, file string) AACParams {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "stream=codec_name,profile,sample_rate,channels", "-of", "default=nw=1", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	var p AACParams
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "codec_name":
			p.Codec = v
		case "profile":
			p.Profile = v
		case "sample_rate":
			p.Rate, _ = strconv.Atoi(v)
		case "channels":
			p.Channels, _ = strconv.Atoi(v)
		}
	}
	return p
}

// AACPayloads returns the raw AAC frames of file's first audio stream, as
// they are stored (no ADTS header): what was published, byte for byte.
func AACPayloads(t testing.TB, file string) [][]byte {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-i", file,
		"-map", "0:a:0", "-c", "copy", "-f", "data", "pipe:1").Output()
	if err != nil {
		t.Fatalf("ffmpeg %s: %v", file, err)
	}
	pk, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "packet=size", "-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	var frames [][]byte
	for _, line := range strings.Fields(string(pk)) {
		n, err := strconv.Atoi(strings.TrimRight(line, ","))
		if err != nil || n > len(out) {
			t.Fatalf("ffprobe %s: packet size %q of %d bytes left", file, line, len(out))
		}
		frames = append(frames, out[:n])
		out = out[n:]
	}
	return frames
}
