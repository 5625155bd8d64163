package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/gonum/dsp/fourier"
)

// encoding is one way ffmpeg could encode a stream: its output options.
type encoding struct {
	name string
	args []string
}

// encodings are the candidates: the default, the cheaper AAC coder, lower
// bitrates and a lower output rate (-audio-rate).
var encodings = []encoding{
	{"AAC 64k (default)", []string{"-c:a", "aac", "-b:a", "64k"}},
	{"AAC 64k, `-aac_coder fast`", []string{"-c:a", "aac", "-aac_coder", "fast", "-b:a", "64k"}},
	{"AAC 48k", []string{"-c:a", "aac", "-b:a", "48k"}},
	{"AAC 32k", []string{"-c:a", "aac", "-b:a", "32k"}},
	{"AAC 48k, `-aac_coder fast`", []string{"-c:a", "aac", "-aac_coder", "fast", "-b:a", "48k"}},
	{"AAC 64k at 24 kHz (`-audio-rate 24000`)", []string{"-c:a", "aac", "-b:a", "64k", "-ar", "24000"}},
	{"AAC 64k at 32 kHz, `-aac_coder fast`", []string{"-c:a", "aac", "-aac_coder", "fast", "-b:a", "64k", "-ar", "32000"}},
}

// signals are the sources, as ffmpeg filter graphs of 44.1 kHz mono: the
// bench's own, and a voice-like one (a 130 Hz harmonic series shaped like
// a vowel's formants, syllables at 4 Hz, and hiss above 4 kHz twice a
// second, as fricatives are).
var signals = []struct{ name, graph string }{
	{"bench signal", audioFilter},
	{"voice-like", "aevalsrc=exprs='(0.30*sin(2*PI*130*t)+0.22*sin(2*PI*260*t)+0.18*sin(2*PI*390*t)+0.25*sin(2*PI*650*t)+0.20*sin(2*PI*780*t)" +
		"+0.12*sin(2*PI*1170*t)+0.10*sin(2*PI*1300*t)+0.06*sin(2*PI*2470*t)+0.04*sin(2*PI*3510*t))*(0.55+0.45*sin(2*PI*4*t))':s=44100:d=%d[v];" +
		"anoisesrc=c=white:r=44100:a=0.15:d=%d,highpass=f=4000,volume='gt(sin(2*PI*2*t),0.7)':eval=frame[f];[v][f]amix=inputs=2:normalize=0"},
}

const qualitySeconds = 60

// qualitySection measures each encoding on each signal: the CPU ffmpeg
// spends encoding (per real-time stream), and the distance of the decoded
// audio from the source.
func (e *env) qualitySection(b *strings.Builder) {
	dir, err := os.MkdirTemp("", "bench-quality")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(b, "\n## Encoding: CPU against quality\n\n%d s of each signal, 44.1 kHz mono, encoded offline by ffmpeg (CPU: the least of 3 runs, less a run that only reads the input, per second of audio), decoded back and compared with the source: the log-spectral distance in 1/3-octave bands (the mean over 46 ms frames of the RMS, over the bands within 40 dB of the frame's loudest, of the level difference, in dB; 0 is identical) up to 16 kHz and up to 8 kHz (voice), and the highest band kept within 10 dB.\n\n", qualitySeconds)
	b.WriteString("| signal | encoding | CPU per stream (% of a core) | distance to 16 kHz (dB) | to 8 kHz (dB) | bandwidth |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, sig := range signals {
		src := filepath.Join(dir, "src.raw")
		if err := runFFmpeg("-filter_complex", fmt.Sprintf(sig.graph, qualitySeconds, qualitySeconds), "-ac", "1", "-f", "s16le", "-y", src); err != nil {
			fail(err)
		}
		ref, err := readPCM(src)
		if err != nil {
			fail(err)
		}
		in := []string{"-f", "s16le", "-ar", "44100", "-ac", "1", "-i", src}
		base := leastCPU(append(append([]string{}, in...), "-f", "null", "-y", "/dev/null"))
		for _, enc := range encodings {
			out := filepath.Join(dir, "out.aac")
			cpu := leastCPU(append(append(append([]string{}, in...), enc.args...), "-f", "adts", "-y", out)) - base
			dec := filepath.Join(dir, "dec.raw")
			if err := runFFmpeg("-i", out, "-ar", "44100", "-ac", "1", "-f", "s16le", "-y", dec); err != nil {
				fail(err)
			}
			got, err := readPCM(dec)
			if err != nil {
				fail(err)
			}
			q := compare(ref, got, 44100)
			fmt.Fprintf(b, "| %s | %s | %.2f | %.2f | %.2f | %.0f Hz |\n", sig.name, enc.name, 100*cpu.Seconds()/qualitySeconds, q.full, q.voice, q.bandwidth)
		}
	}
}

func runFFmpeg(args ...string) error {
	cmd := exec.Command("ffmpeg", append([]string{"-hide_banner", "-loglevel", "error"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ffmpeg %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return nil
}

// leastCPU runs ffmpeg with args 3 times and returns the least user +
// system time: the noise of a shared machine only ever adds.
func leastCPU(args []string) time.Duration {
	best := time.Duration(math.MaxInt64)
	for range 3 {
		cmd := exec.Command("ffmpeg", append([]string{"-hide_banner", "-loglevel", "error"}, args...)...)
		if err := cmd.Run(); err != nil {
			fail(fmt.Errorf("ffmpeg %s: %v", strings.Join(args, " "), err))
		}
		best = min(best, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
	}
	return best
}

func readPCM(path string) ([]float64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(raw)/2)
	for i := range out {
		out[i] = float64(int16(binary.LittleEndian.Uint16(raw[2*i:]))) / 32768
	}
	return out, nil
}

// quality is how far decoded audio is from its source.
type quality struct {
	full, voice float64 // log-spectral distance in dB, to 16 and to 8 kHz
	bandwidth   float64 // the upper edge of the highest band within 10 dB, Hz
}

const specFrame = 2048 // 46 ms at 44.1 kHz

// compare aligns got to ref (codecs delay their output) and measures the
// distance between them.
func compare(ref, got []float64, rate int) quality {
	got = got[min(len(got), align(ref, got, 8192)):]
	n := min(len(ref), len(got))
	bands := thirdOctaves(rate, specFrame)
	fft := fourier.NewFFT(specFrame)
	win := make([]float64, specFrame)
	for i := range win {
		win[i] = 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/specFrame)
	}
	var full, voice float64
	var frames int
	worst := make([]float64, len(bands)) // per band: the mean level difference
	counted := make([]int, len(bands))
	for at := specFrame; at+specFrame <= n-specFrame; at += specFrame / 2 { // skip the edges
		pr, pg := bandPowers(fft, ref[at:at+specFrame], win, bands), bandPowers(fft, got[at:at+specFrame], win, bands)
		loud := 0.0
		for _, p := range pr {
			loud = max(loud, p)
		}
		if loud < 1e-7 {
			continue // a silent frame says nothing
		}
		var sf, sv float64
		var nf, nv int
		for k, band := range bands {
			if pr[k] < loud*1e-4 { // 40 dB under the frame's loudest band: masked beside it
				continue
			}
			d := 10 * math.Log10((pr[k]+1e-12)/(pg[k]+1e-12))
			worst[k] += math.Abs(d)
			counted[k]++
			if band.hi <= 16000 {
				sf, nf = sf+d*d, nf+1
			}
			if band.hi <= 8000 {
				sv, nv = sv+d*d, nv+1
			}
		}
		if nf > 0 && nv > 0 {
			full, voice, frames = full+math.Sqrt(sf/float64(nf)), voice+math.Sqrt(sv/float64(nv)), frames+1
		}
	}
	q := quality{}
	if frames > 0 {
		q.full, q.voice = full/float64(frames), voice/float64(frames)
	}
	for k, band := range bands {
		if counted[k] > 0 && worst[k]/float64(counted[k]) <= 10 {
			q.bandwidth = band.hi
		}
	}
	return q
}

// align returns the delay of got against ref, up to maxLag samples: the
// lag with the greatest correlation over the first second after the first.
func align(ref, got []float64, maxLag int) int {
	from, span := 44100, 44100
	if len(ref) < from+span || len(got) < from+span+maxLag {
		return 0
	}
	best, bestLag := math.Inf(-1), 0
	for lag := 0; lag < maxLag; lag++ {
		var c float64
		for i := from; i < from+span; i++ {
			c += ref[i] * got[i+lag]
		}
		if c > best {
			best, bestLag = c, lag
		}
	}
	return bestLag
}

type band struct {
	lo, hi float64 // Hz
	from   int     // FFT bins [from, to)
	to     int
}

// thirdOctaves returns the 1/3-octave bands from 50 Hz to 20 kHz (or the
// Nyquist rate), each at least one bin wide.
func thirdOctaves(rate, n int) []band {
	var out []band
	binHz := float64(rate) / float64(n)
	for c := 63.0; c*math.Pow(2, 1.0/6) <= min(20000, float64(rate)/2); c *= math.Pow(2, 1.0/3) {
		lo, hi := c/math.Pow(2, 1.0/6), c*math.Pow(2, 1.0/6)
		from, to := int(math.Ceil(lo/binHz)), int(math.Ceil(hi/binHz))
		if to > from {
			out = append(out, band{lo: lo, hi: hi, from: from, to: to})
		}
	}
	return out
}

// bandPowers returns the windowed frame's power in each band.
func bandPowers(fft *fourier.FFT, frame, win []float64, bands []band) []float64 {
	x := make([]float64, len(frame))
	for i := range x {
		x[i] = frame[i] * win[i]
	}
	coef := fft.Coefficients(nil, x)
	out := make([]float64, len(bands))
	for k, b := range bands {
		for i := b.from; i < b.to && i < len(coef); i++ {
			re, im := real(coef[i]), imag(coef[i])
			out[k] += re*re + im*im
		}
	}
	return out
}
