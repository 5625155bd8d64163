// Package markers makes test audio whose content can be recognised after
// any number of lossy codecs, cuts and replays, and finds it again in a
// recording: every Unit of the audio carries its own index as a chord of
// three tones (one base-9 digit each), so a recording says which part of
// the source it holds, in what order, how often, and what is missing.
//
// Durations prove nothing about delivery (gap-fill silence makes a
// recording as long as the wall clock); content does.
package markers

import (
	"math"
	"time"
)

// Unit is the length of one marker: fine enough to place a cut within a
// restart's few hundred milliseconds, long enough to be found in 20 ms
// windows.
const Unit = 100 * time.Millisecond

const (
	digits    = 3 // tones per marker, one per digit
	base      = 9 // values per digit: 9³ markers of 100 ms is 72.9 s
	lowTone   = 500.0
	toneStep  = 175.0 // Hz between tones: above the 20 ms Hann window's ±100 Hz main lobe
	amplitude = 0.25  // per tone: three together stay below full scale
)

// MaxMarkers is how many distinct markers the code has.
const MaxMarkers = base * base * base

// freq is the tone of digit value v in digit position d.
func freq(d, v int) float64 { return lowTone + toneStep*float64(d*base+v) }

// digitsOf splits marker m into its base-9 digits, lowest first.
func digitsOf(m int) [digits]int {
	var out [digits]int
	for d := range out {
		out[d] = m % base
		m /= base
	}
	return out
}

// unitStart is the first sample of marker m at rate, rounded down
// without drift (a marker is 1102 or 1103 samples at 11.025 kHz).
func unitStart(m, rate int) int {
	return int(int64(m) * int64(rate) * int64(Unit) / int64(time.Second))
}

// PCM returns markers 0 … n-1 (n ≤ MaxMarkers), one Unit each, as mono
// samples in [-1, 1] at rate, followed by one Unit of silence so that the
// last marker's end is as clear as the others'. Each tone's phase runs on
// across a change of frequency, so units join without clicks.
func PCM(n, rate int) []float32 {
	n = min(n, MaxMarkers)
	out := make([]float32, unitStart(n+1, rate))
	var phase [digits]float64
	for m := 0; m < n; m++ {
		ds := digitsOf(m)
		var step [digits]float64
		for d := range ds {
			step[d] = 2 * math.Pi * freq(d, ds[d]) / float64(rate)
		}
		for i := unitStart(m, rate); i < unitStart(m+1, rate); i++ {
			var s float64
			for d := range phase {
				s += amplitude * math.Sin(phase[d])
				phase[d] = math.Mod(phase[d]+step[d], 2*math.Pi)
			}
			out[i] = float32(s)
		}
	}
	return out
}

// S16LE renders samples as signed 16-bit little-endian PCM, what ffmpeg
// reads with -f s16le.
func S16LE(pcm []float32) []byte {
	out := make([]byte, 2*len(pcm))
	for i, s := range pcm {
		v := int16(max(-32768, min(32767, math.Round(float64(s)*32767))))
		out[2*i], out[2*i+1] = byte(v), byte(uint16(v)>>8)
	}
	return out
}

// Markers is how many whole markers d of source audio holds.
func Markers(d time.Duration) int { return int(d / Unit) }
