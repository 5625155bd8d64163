package main

import (
	"math/rand/v2"
	"testing"
)

// The distance is 0 for the source itself, whatever the delay, and grows
// where a codec would cut: a filter that dulls the highs leaves the voice
// band nearly whole, costs the full band more, and narrows the bandwidth.
func TestCompareSeesWhatChanged(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ref := make([]float64, 4*44100)
	for i := range ref {
		ref[i] = 0.3 * rng.NormFloat64() // white: every band has energy
	}
	if q := compare(ref, ref, 44100); q.full != 0 || q.voice != 0 || q.bandwidth < 16000 {
		t.Errorf("the source against itself: %+v", q)
	}
	delayed := append(make([]float64, 1500), ref...)
	if q := compare(ref, delayed, 44100); q.full > 0.01 || q.bandwidth < 16000 {
		t.Errorf("the source 1500 samples late: %+v", q)
	}
	dull := make([]float64, len(ref)) // a 6-tap moving average: -10 dB at ~5.5 kHz, a null at 7.35 kHz
	for i := range dull {
		for k := max(0, i-5); k <= i; k++ {
			dull[i] += ref[k] / 6
		}
	}
	q := compare(ref, dull, 44100)
	if q.full <= q.voice || q.voice <= 0 || q.bandwidth >= 16000 {
		t.Errorf("the source dulled: %+v, want more distance to 16 kHz than to 8, and a narrower band", q)
	}
	t.Logf("dulled: %+v", q)
}
