package markers

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
)

const rate = 16000

// at is a position in the source in samples.
func at(d time.Duration) int { return samplesOf(d, rate) }

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// near reports whether got is within Noise of want.
func near(got, want time.Duration) bool { return got >= want-Noise && got <= want+Noise }

func analyzePCM(t *testing.T, acked int, recs ...[]float32) Report {
	t.Helper()
	d := NewDetector(rate)
	var runs [][]Run
	for _, pcm := range recs {
		runs = append(runs, d.Runs(pcm))
	}
	rep := Analyze(runs, acked)
	t.Logf("sequence %s; lost %v, duplicated %v, missing %v, events %v", rep.Sequence, rep.Lost, rep.Duplicated, rep.Missing, rep.Events)
	return rep
}

func cat(parts ...[]float32) []float32 { return slices.Concat(parts...) }

func TestCleanAudioHasEveryMarkerOnce(t *testing.T) {
	src := PCM(120, rate)
	rep := analyzePCM(t, 120, src)
	if rep.Lost != 0 || rep.Duplicated != 0 || len(rep.Missing) != 0 || len(rep.OutOfOrder) != 0 {
		t.Errorf("clean audio: %+v", rep)
	}
	if rep.Sequence != "0-119" {
		t.Errorf("sequence %q, want 0-119", rep.Sequence)
	}
}

func TestEveryMarkerIsDistinct(t *testing.T) {
	d := NewDetector(rate)
	src := PCM(MaxMarkers, rate)
	runs := d.Runs(src)
	if len(runs) != MaxMarkers {
		t.Fatalf("%d runs in %d markers", len(runs), MaxMarkers)
	}
	for i, r := range runs {
		if r.Marker != i || !near(r.Len(), Unit) {
			t.Fatalf("run %d: %+v", i, r)
		}
	}
}

func TestCutIsLost(t *testing.T) {
	src := PCM(60, rate)
	// 200 ms cut out at 2.35 s: part of marker 23, all of 24, part of 25.
	rec := cat(src[:at(ms(2350))], src[at(ms(2550)):])
	rep := analyzePCM(t, 60, rec)
	if !near(rep.Lost, ms(200)) || rep.Duplicated != 0 {
		t.Errorf("lost %v duplicated %v, want 200 ms lost", rep.Lost, rep.Duplicated)
	}
	if !slices.Equal(rep.Missing, []int{24}) {
		t.Errorf("missing %v, want [24]", rep.Missing)
	}
	if len(rep.Events) != 1 || !near(rep.Events[0].Source, ms(2350)) {
		t.Errorf("events %v", rep.Events)
	}
}

func TestReplayIsDuplicated(t *testing.T) {
	src := PCM(60, rate)
	// Played to 3.43 s, then again from 3.12 s: 310 ms twice.
	rec := cat(src[:at(ms(3430))], src[at(ms(3120)):])
	rep := analyzePCM(t, 60, rec)
	if !near(rep.Duplicated, ms(310)) || rep.Lost != 0 || len(rep.Missing) != 0 || len(rep.OutOfOrder) != 0 {
		t.Errorf("duplicated %v lost %v missing %v, want 310 ms duplicated", rep.Duplicated, rep.Lost, rep.Missing)
	}
	if len(rep.Events) != 1 || !near(rep.Events[0].Source, ms(3120)) {
		t.Errorf("events %v", rep.Events)
	}
}

func TestReplayWithinOneMarker(t *testing.T) {
	src := PCM(60, rate)
	rec := cat(src[:at(ms(1070))], src[at(ms(1030)):])
	rep := analyzePCM(t, 60, rec)
	if !near(rep.Duplicated, ms(40)) || rep.Lost != 0 {
		t.Errorf("duplicated %v lost %v, want 40 ms duplicated", rep.Duplicated, rep.Lost)
	}
}

func TestSilenceIsNeitherLostNorDuplicated(t *testing.T) {
	src := PCM(60, rate)
	silence := make([]float32, at(ms(700)))
	rec := cat(src[:at(ms(2345))], silence, src[at(ms(2345)):])
	rep := analyzePCM(t, 60, rec)
	if rep.Lost != 0 || rep.Duplicated != 0 || len(rep.Missing) != 0 {
		t.Errorf("gap fill: %+v", rep)
	}
}

// A new decoder's first frames come out as near-silence over audio that
// was sent: that audio is lost.
func TestSilencedAudioIsLost(t *testing.T) {
	src := PCM(60, rate)
	rec := slices.Clone(src)
	clear(rec[at(ms(4010)):at(ms(4150))])
	rep := analyzePCM(t, 60, rec)
	if !near(rep.Lost, ms(140)) || rep.Duplicated != 0 {
		t.Errorf("lost %v duplicated %v, want 140 ms lost", rep.Lost, rep.Duplicated)
	}
}

func TestRecordingsConcatenate(t *testing.T) {
	src := PCM(80, rate)
	// A restart: the first publish ends at 3.21 s, the second replays
	// from 3.05 s after 300 ms of silence; a second restart loses 120 ms.
	silence := make([]float32, at(ms(300)))
	r1 := src[:at(ms(3210))]
	r2 := cat(silence, src[at(ms(3050)):at(ms(6000))])
	r3 := src[at(ms(6120)):]
	// Marker 60 (6.0 s to 6.1 s) is in the cut.
	rep := analyzePCM(t, 80, r1, r2, r3)
	if !near(rep.Duplicated, ms(160)) || !near(rep.Lost, ms(120)) || !slices.Equal(rep.Missing, []int{60}) {
		t.Errorf("duplicated %v lost %v missing %v, want 160 ms and 120 ms", rep.Duplicated, rep.Lost, rep.Missing)
	}
	if len(rep.Events) != 2 || rep.Events[0].Recording != 1 || rep.Events[1].Recording != 2 {
		t.Errorf("events %v", rep.Events)
	}
}

func TestRecordingsInTheWrongOrder(t *testing.T) {
	src := PCM(40, rate)
	rep := analyzePCM(t, 40, src[at(ms(2000)):], src[:at(ms(2000))])
	if len(rep.OutOfOrder) == 0 {
		t.Errorf("recordings swapped, nothing out of order: %+v", rep)
	}
}

func TestUnacknowledgedTailIsNotMissing(t *testing.T) {
	src := PCM(60, rate)
	rep := analyzePCM(t, 40, src[:at(ms(4000))])
	if rep.Lost != 0 || len(rep.Missing) != 0 {
		t.Errorf("lost %v missing %v for markers that were never acknowledged", rep.Lost, rep.Missing)
	}
	rep = analyzePCM(t, 60, src[:at(ms(4000))])
	if !near(rep.Lost, 2*time.Second) || len(rep.Missing) != 20 {
		t.Errorf("lost %v missing %d, want 2 s and 20 markers", rep.Lost, len(rep.Missing))
	}
}

// Random cuts, replays and silences in noisy audio: the report adds up to
// what was done.
func TestRandomEdits(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("MARKERS_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (MARKERS_SEED reproduces)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	src := PCM(200, rate)
	for round := 0; round < 8; round++ {
		var rec []float32
		var lost, dup time.Duration
		var edits []string
		pos := time.Duration(0)
		for pos < 16*time.Second {
			next := pos + ms(1000+rng.IntN(3000))
			rec = append(rec, src[at(pos):at(next)]...)
			switch rng.IntN(3) {
			case 0:
				step := ms(40 + rng.IntN(300))
				edits = append(edits, fmt.Sprintf("cut %v→%v", next, next+step))
				pos, lost = next+step, lost+step
			case 1:
				step := ms(40 + rng.IntN(400))
				edits = append(edits, fmt.Sprintf("replay %v→%v", next, next-step))
				pos, dup = next-step, dup+step
			default:
				rec = append(rec, make([]float32, at(ms(rng.IntN(800))))...)
				pos = next
			}
		}
		rec = append(rec, src[at(pos):at(20*time.Second)]...)
		for i := range rec {
			rec[i] += float32(rng.NormFloat64() * 0.01) // -40 dB of noise
		}
		d := NewDetector(rate)
		rep := Analyze([][]Run{d.Runs(rec)}, 200)
		events := time.Duration(len(rep.Events))
		if rep.Lost < lost-events*Noise || rep.Lost > lost+events*Noise ||
			rep.Duplicated < dup-events*Noise || rep.Duplicated > dup+events*Noise {
			t.Errorf("round %d: measured lost %v duplicated %v, made %v and %v (%v): %s %v", round, rep.Lost, rep.Duplicated, lost, dup, edits, rep.Sequence, rep.Events)
		}
	}
}

// Through the codecs of a real stream: MP3 from the client, AAC in FLV
// from the publisher, and WebM/Opus from a browser.
func TestThroughCodecs(t *testing.T) {
	rtmptest.Require(t, "ffmpeg")
	dir := t.TempDir()
	check := func(name string, media []byte, toAAC bool) {
		t.Helper()
		in := filepath.Join(dir, name)
		if err := os.WriteFile(in, media, 0o644); err != nil {
			t.Fatal(err)
		}
		if toAAC {
			out := in + ".flv"
			if b, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-i", in, "-c:a", "aac", "-b:a", "64k", "-f", "flv", out).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			in = out
		}
		runs, err := Recordings([]string{in})
		if err != nil {
			t.Fatal(err)
		}
		rep := Analyze(runs, 100)
		t.Logf("%s: %s, lost %v duplicated %v", name, rep.Sequence, rep.Lost, rep.Duplicated)
		if rep.Lost != 0 || rep.Duplicated != 0 || len(rep.Missing) != 0 || rep.Sequence != "0-99" {
			t.Errorf("%s: %+v", name, rep)
		}
	}
	for _, c := range []struct {
		rate    int
		bitrate string
	}{{16000, "32k"}, {16000, "48k"}, {44100, "64k"}} {
		mp3, err := MP3(100, c.rate, c.bitrate)
		if err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("mp3-%s-%d.mp3", c.bitrate, c.rate), mp3, true)
	}
	webm, err := WebMOpus(100, "32k")
	if err != nil {
		t.Fatal(err)
	}
	check("opus.webm", webm, true)
}
