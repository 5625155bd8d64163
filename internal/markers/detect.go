package markers

import (
	"math"
	"time"
)

const (
	window = 20 * time.Millisecond // Hann window: ±100 Hz main lobe at any rate
	hop    = 5 * time.Millisecond  // the precision of a run's ends
	// minAmplitude is the weakest tone taken for a digit: a twelfth of
	// what PCM writes, far above a codec's noise floor.
	minAmplitude = amplitude / 12
	// dominance is how much stronger a digit's tone must be than the
	// digit's next strongest: a window across two units has both.
	dominance = 3.0
	// minRunWindows drops runs shorter than this unless they continue a
	// neighbour: a codec's garbage at a cut can resemble a chord for a
	// window or two, never for four.
	minRunWindows = 4
	// joinWindows is the widest stretch of unrecognised windows that is
	// still the crossing from one marker to the next (a window straddling
	// both is recognised as neither); its middle is their boundary.
	joinWindows = 6
)

// Run is one stretch of a recording that carries one marker.
type Run struct {
	Marker     int
	Start, End time.Duration // in the decoded recording
	// FromPrev: the run follows the previous marker with no gap, so it
	// starts at its marker's beginning; ToNext likewise for its end.
	FromPrev, ToNext bool
}

// Len is how much audio the run holds.
func (r Run) Len() time.Duration { return r.End - r.Start }

// Detector finds markers in mono PCM at one sample rate.
type Detector struct {
	rate      int
	win, hop  int
	hann      []float64
	hannSum   float64
	coef      [digits][base]float64 // Goertzel's 2·cos(ω) per tone
	scratchIn []float64
}

// NewDetector returns a detector for PCM at rate (at least 12 kHz: the
// highest tone is near 5 kHz).
func NewDetector(rate int) *Detector {
	d := &Detector{rate: rate, win: samplesOf(window, rate), hop: samplesOf(hop, rate)}
	d.hann = make([]float64, d.win)
	for i := range d.hann {
		d.hann[i] = 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/float64(d.win-1))
		d.hannSum += d.hann[i]
	}
	for dg := 0; dg < digits; dg++ {
		for v := 0; v < base; v++ {
			d.coef[dg][v] = 2 * math.Cos(2*math.Pi*freq(dg, v)/float64(rate))
		}
	}
	d.scratchIn = make([]float64, d.win)
	return d
}

func samplesOf(t time.Duration, rate int) int {
	return int(int64(rate) * int64(t) / int64(time.Second))
}

// classify returns the marker that the window starting at sample i
// carries, or -1.
func (d *Detector) classify(pcm []float32, i int) int {
	x := d.scratchIn
	for n := range x {
		x[n] = float64(pcm[i+n]) * d.hann[n]
	}
	marker, scale := 0, 1
	for dg := 0; dg < digits; dg++ {
		best, bestAmp, second := -1, 0.0, 0.0
		for v := 0; v < base; v++ {
			a := goertzel(x, d.coef[dg][v]) * 2 / d.hannSum
			switch {
			case a > bestAmp:
				best, second, bestAmp = v, bestAmp, a
			case a > second:
				second = a
			}
		}
		if bestAmp < minAmplitude || bestAmp < dominance*second {
			return -1
		}
		marker += best * scale
		scale *= base
	}
	return marker
}

// goertzel returns the magnitude of x's spectrum at the frequency whose
// 2·cos(ω) is coef.
func goertzel(x []float64, coef float64) float64 {
	var s1, s2 float64
	for _, v := range x {
		s1, s2 = v+coef*s1-s2, s1
	}
	return math.Sqrt(max(0, s1*s1+s2*s2-coef*s1*s2))
}

// Runs finds the markers in pcm, in the order they play.
func (d *Detector) Runs(pcm []float32) []Run {
	type raw struct{ marker, first, last int } // window indexes
	var raws []raw
	lastWindow := (len(pcm) - d.win) / d.hop
	for k := 0; k <= lastWindow; k++ {
		m := d.classify(pcm, k*d.hop)
		if m < 0 {
			continue
		}
		if n := len(raws); n > 0 && raws[n-1].marker == m && raws[n-1].last == k-1 {
			raws[n-1].last = k
			continue
		}
		raws = append(raws, raw{m, k, k})
	}
	// Drop flickers: short runs that do not continue a neighbour. A short
	// run that does is the rest of a marker cut short.
	continues := func(i, j int) bool {
		if j < 0 || j >= len(raws) || max(raws[i].first, raws[j].first)-min(raws[i].last, raws[j].last)-1 > joinWindows {
			return false
		}
		return max(raws[i].marker, raws[j].marker)-min(raws[i].marker, raws[j].marker) <= 1
	}
	var kept []raw
	for i, r := range raws {
		if r.last-r.first+1 >= minRunWindows || continues(i, i-1) || continues(i, i+1) {
			kept = append(kept, r)
		}
	}
	center := func(k int) time.Duration {
		return time.Duration(float64(k*d.hop+d.win/2) / float64(d.rate) * float64(time.Second))
	}
	half := hop / 2
	runs := make([]Run, len(kept))
	for i, r := range kept {
		runs[i] = Run{Marker: r.marker, Start: center(r.first) - half, End: center(r.last) + half}
		// At the recording's edges the first and last windows reach them.
		if r.first == 0 {
			runs[i].Start = 0
		}
		if r.last == lastWindow {
			runs[i].End = time.Duration(float64(len(pcm)) / float64(d.rate) * float64(time.Second))
		}
		if i == 0 {
			continue
		}
		// The same marker again is a cut or a pause within it: each part
		// keeps its own length.
		prev := kept[i-1]
		if r.first-prev.last-1 > joinWindows || r.marker == prev.marker {
			continue
		}
		mid := (center(prev.last) + center(r.first)) / 2
		runs[i-1].End, runs[i].Start = mid, mid
		if r.marker == prev.marker+1 {
			runs[i-1].ToNext, runs[i].FromPrev = true, true
		}
	}
	return runs
}
