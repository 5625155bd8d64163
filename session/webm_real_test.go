package session

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
)

// Real WebM: Chromium's MediaRecorder (testdata/mediarecorder.webm, made
// by testdata/mkwebm) and Debian's ffmpeg, writing to a pipe (sizes
// unknown) and to a file (sizes known, SeekHead, Cues, Void), checked with
// ffmpeg itself.

// Chromium's MediaRecorder output (testdata/mediarecorder.webm, see
// testdata/mkwebm): cut anywhere, its init and units are the stream byte
// for byte, and their durations are the 66 packets of 60 ms ffprobe reads.
func TestWebMScannerMediaRecorderFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/mediarecorder.webm")
	if err != nil {
		t.Fatal(err)
	}
	seed := rand.Uint64()
	var s webmScanner
	var joined []byte
	var sum time.Duration
	units := feedWebM(t, &s, cutRandomly(rand.New(rand.NewPCG(seed, 0)), data, 100)...)
	for _, u := range units {
		joined = append(append(joined, u.init...), u.data...)
		sum += u.dur
	}
	if !bytes.Equal(joined, data) || len(units) != 66 || sum != 3960*time.Millisecond {
		t.Fatalf("seed %d: %d units of %v, the stream back: %v; want 66 units of 3.96 s", seed, len(units), sum, bytes.Equal(joined, data))
	}
}

// webmSource is one real WebM stream to scan.
type webmSource struct {
	name string
	data []byte
}

func realWebMSources(t *testing.T) []webmSource {
	t.Helper()
	rtmptest.Require(t, "ffmpeg", "ffprobe")
	fixture, err := os.ReadFile("testdata/mediarecorder.webm")
	if err != nil {
		t.Fatal(err)
	}
	sources := []webmSource{{"MediaRecorder", fixture}}
	for _, c := range []struct {
		name string
		args []string
		file bool
	}{
		{"ffmpeg to a pipe", []string{"-c:a", "libopus"}, false},
		{"ffmpeg to a file", []string{"-c:a", "libopus"}, true},
		{"ffmpeg SILK 40 ms", []string{"-ar", "16000", "-c:a", "libopus", "-application", "voip", "-b:a", "12k", "-frame_duration", "40"}, false},
		{"ffmpeg Vorbis", []string{"-c:a", "libvorbis"}, false},
	} {
		out := filepath.Join(t.TempDir(), "out.webm")
		args := slices.Concat([]string{"-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=3"}, c.args, []string{"-f", "webm"})
		var data []byte
		if c.file {
			cmd := exec.Command("ffmpeg", append(args, out)...)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", c.name, err, b)
			}
			data, err = os.ReadFile(out)
		} else {
			data, err = exec.Command("ffmpeg", append(args, "pipe:1")...).Output()
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		sources = append(sources, webmSource{c.name, data})
	}
	return sources
}

// decodeWebM decodes a WebM stream read from a pipe, as the session's
// ffmpeg reads it; any word on stderr is a failure.
func decodeWebM(t *testing.T, data []byte) []byte {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-v", "error", "-f", "webm", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "48000", "pipe:1")
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pcm, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffmpeg failed to decode: %v: %s", err, stderr.String())
	}
	return pcm
}

func pcmDuration(pcm []byte) time.Duration { return time.Duration(len(pcm)/2) * time.Second / 48000 }

// probePackets returns the start of each packet ffprobe reads from data,
// and their span, from the first one's start to the last one's end (packet
// durations alone are rounded to the millisecond timebase).
func probePackets(t *testing.T, data []byte) (starts []string, span time.Duration) {
	t.Helper()
	cmd := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", "pipe:0")
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	var first, end float64
	for i, line := range strings.Fields(string(out)) {
		var pts, dur float64
		if _, err := fmt.Sscanf(line, "%f,%f", &pts, &dur); err != nil {
			t.Fatalf("ffprobe said %q", line)
		}
		if i == 0 {
			first = pts
		}
		end = max(end, pts+dur)
		starts = append(starts, strings.Split(line, ",")[0])
	}
	return starts, time.Duration((end - first) * float64(time.Second))
}

// scanCut scans data cut at random places, seeded, plus whatever flush holds.
func scanCut(t *testing.T, seed uint64, data []byte) []webmUnit {
	t.Helper()
	var s webmScanner
	r := rand.New(rand.NewPCG(seed, 0))
	units := feedWebM(t, &s, cutRandomly(r, data, len(data)/500)...)
	return append(units, s.flush()...)
}

// joinUnits is the stream the units came from: init data, then data.
func joinUnits(units []webmUnit) []byte {
	var b []byte
	for _, u := range units {
		b = append(append(b, u.init...), u.data...)
	}
	return b
}

// media is the units' data, without init.
func media(units []webmUnit) []byte {
	var b []byte
	for _, u := range units {
		b = append(b, u.data...)
	}
	return b
}

func maxDur(units []webmUnit) time.Duration {
	var m time.Duration
	for _, u := range units {
		m = max(m, u.dur)
	}
	return m
}

func sumDur(units []webmUnit) time.Duration {
	var d time.Duration
	for _, u := range units {
		d += u.dur
	}
	return d
}

func abs(d time.Duration) time.Duration { return max(d, -d) }

// The units of a real stream, however it is cut, are the stream: decoded,
// they give the same audio as the stream itself, and their durations add
// up to what ffprobe reads. And the property a restarted ffmpeg relies on:
// init data, a unit's resume and the units from there on are a stream
// ffmpeg decodes without a word, with the audio of those units at their
// original timestamps.
func TestWebMScannerRealStreams(t *testing.T) {
	sources := realWebMSources(t)
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			t.Parallel()
			seed := rand.Uint64()
			units := scanCut(t, seed, src.data)
			if again := scanCut(t, seed+1, src.data); fmt.Sprint(again) != fmt.Sprint(units) {
				t.Fatalf("seeds %d and %d: other cuts gave other units", seed, seed+1)
			}
			joined := joinUnits(units)
			if src.name == "MediaRecorder" && !bytes.Equal(joined, src.data) {
				t.Errorf("seed %d: init and units are not the MediaRecorder stream", seed)
			}
			want, got := decodeWebM(t, src.data), decodeWebM(t, joined)
			if !bytes.Equal(got, want) {
				t.Errorf("seed %d: the units decode to %v of audio unlike the stream's %v", seed, pcmDuration(got), pcmDuration(want))
			}
			starts, probed := probePackets(t, src.data)
			sum, frame := sumDur(units), maxDur(units)
			t.Logf("%d units, %d bytes of init; durations add up to %v, ffprobe reads %v, ffmpeg decodes %v", len(units), len(units[0].init), sum, probed, pcmDuration(want))
			if abs(sum-probed) > frame {
				t.Errorf("durations add up to %v, ffprobe reads %v: more than a frame (%v) apart", sum, probed, frame)
			}
			if len(starts) != len(units) {
				t.Fatalf("ffprobe reads %d packets in %d units", len(starts), len(units))
			}

			n := len(units)
			ks := []int{1, n / 2, n - 1}
			if k := slices.IndexFunc(units[1:], func(u webmUnit) bool { return u.resume == nil }); k >= 0 {
				ks = append(ks, k+1) // the first unit of a later cluster
			}
			for _, k := range ks {
				stream := slices.Concat(units[0].init, units[k].resume, media(units[k:]))
				got, want := pcmDuration(decodeWebM(t, stream)), sumDur(units[k:])
				resumed, _ := probePackets(t, stream)
				t.Logf("from unit %d of %d: decoded %v, units carry %v; first packet at %s s", k, n, got, want, resumed[0])
				// The encoder's delay and last padding are trimmed off what is decoded.
				if got > want || got < want-frame-10*time.Millisecond {
					t.Errorf("from unit %d of %d: decoded %v, want the %v its units carry", k, n, got, want)
				}
				if !slices.Equal(resumed, starts[k:]) {
					t.Errorf("from unit %d of %d: packets start at %v… s, want %v… s", k, n, resumed[:1], starts[k:k+1])
				}
			}
		})
	}
	// A recorder restarted on the same connection sends a second stream
	// after the first: each gets its own init and the units it has alone.
	t.Run("a recorder restarted", func(t *testing.T) {
		a, b := sources[0].data, sources[2].data
		var sa, sb webmScanner
		want := append(feedWebM(t, &sa, a), feedWebM(t, &sb, b)...)
		if got := scanCut(t, 2, slices.Concat(a, b)); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatal("the two streams together gave other units than each alone")
		}
	})
}
