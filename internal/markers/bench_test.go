package markers

import "testing"

// A minute of audio, as the end-to-end test decodes it.
func BenchmarkRunsMinute(b *testing.B) {
	pcm := PCM(600, DecodeRate)
	d := NewDetector(DecodeRate)
	for b.Loop() {
		d.Runs(pcm)
	}
}
