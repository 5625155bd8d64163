package markers

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os/exec"
	"strconv"
)

// DecodeRate is the sample rate recordings are decoded at: every tone
// lies well below its Nyquist frequency.
const DecodeRate = 16000

// Encode pipes pcm (mono at rate) through ffmpeg with the output options
// args (codec, bitrate, format) and returns what ffmpeg wrote.
func Encode(pcm []float32, rate int, args ...string) ([]byte, error) {
	argv := append([]string{"-hide_banner", "-loglevel", "error",
		"-f", "s16le", "-ar", strconv.Itoa(rate), "-ac", "1", "-i", "pipe:0"}, args...)
	argv = append(argv, "pipe:1")
	cmd := exec.Command("ffmpeg", argv...)
	cmd.Stdin = bytes.NewReader(S16LE(pcm))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ffmpeg %v: %v\n%s", args, err, stderr.String())
	}
	return out, nil
}

// MP3 returns n markers as bare MP3 frames (no ID3 tag, no Xing header),
// as a recorder's frame callback gives them.
func MP3(n, rate int, bitrate string) ([]byte, error) {
	return Encode(PCM(n, rate), rate, "-c:a", "libmp3lame", "-b:a", bitrate,
		"-write_xing", "0", "-id3v2_version", "0", "-f", "mp3")
}

// WebMOpus returns n markers as WebM with Opus at 48 kHz, as a browser's
// MediaRecorder makes it.
func WebMOpus(n int, bitrate string) ([]byte, error) {
	return Encode(PCM(n, 48000), 48000, "-c:a", "libopus", "-b:a", bitrate, "-f", "webm")
}

// DecodeFile decodes the first audio stream of a media file to mono PCM
// at DecodeRate, ignoring its timestamps: what matters is the content in
// the order it plays.
func DecodeFile(path string) ([]float32, error) {
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-i", path,
		"-map", "0:a:0", "-ac", "1", "-ar", strconv.Itoa(DecodeRate), "-f", "f32le", "pipe:1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %v\n%s", path, err, stderr.String())
	}
	pcm := make([]float32, len(out)/4)
	for i := range pcm {
		pcm[i] = math.Float32frombits(binary.LittleEndian.Uint32(out[4*i:]))
	}
	return pcm, nil
}

// Recordings decodes each file and finds its runs, for Analyze.
func Recordings(files []string) ([][]Run, error) {
	d := NewDetector(DecodeRate)
	var out [][]Run
	for _, f := range files {
		pcm, err := DecodeFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, d.Runs(pcm))
	}
	return out, nil
}
