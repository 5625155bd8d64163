package rtmptest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"testing"

	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

// OpusPackets makes a sine tone of the given length with ffmpeg's libopus,
// mono 20 ms packets at 48 kHz as a WebRTC sender makes them, and returns
// its packets (read from Ogg pages of one packet each).
func OpusPackets(t testing.TB, seconds float64) [][]byte {
	t.Helper()
	args := []string{"-hide_banner", "-loglevel", "error", "-f", "lavfi",
		"-i", fmt.Sprintf("sine=f=440:d=%g:r=48000", seconds), "-ac", "1",
		"-c:a", "libopus", "-b:a", "32k", "-frame_duration", "20", "-application", "lowdelay",
		"-page_duration", "20000", "-f", "ogg", "pipe:1"}
	var stderr bytes.Buffer
	cmd := exec.Command("ffmpeg", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, stderr.String())
	}
	r, _, err := oggreader.NewWith(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("ogg: %v", err)
	}
	var pkts [][]byte
	for {
		payload, _, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			return pkts
		}
		if err != nil {
			t.Fatalf("ogg: %v", err)
		}
		if bytes.HasPrefix(payload, []byte("OpusTags")) {
			continue
		}
		pkts = append(pkts, payload)
	}
}
