package session

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/internal/rtmptest"
)

// opusWebM is a WebM of d seconds of a 440 Hz tone in Opus, as ffmpeg
// writes it to a pipe.
func opusWebM(t *testing.T, d float64, channels int) []byte {
	t.Helper()
	rtmptest.Require(t, "ffmpeg", "ffprobe")
	out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", fmt.Sprintf("sine=f=440:d=%g", d),
		"-ac", fmt.Sprint(channels), "-c:a", "libopus", "-b:a", "48k", "-f", "webm", "pipe:1").Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// scanWebM cuts data into the session's units.
func scanWebM(t *testing.T, data []byte) (*webmUnits, []unit) {
	t.Helper()
	w := &webmUnits{}
	units, err := w.feed(data)
	if err != nil {
		t.Fatal(err)
	}
	return w, append(units, w.flush()...)
}

// probeTimes returns each audio packet's pts and duration in seconds.
func probeTimes(t *testing.T, data []byte) (pts, dur []float64) {
	t.Helper()
	cmd := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", "pipe:0")
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffprobe: %v: %s", err, stderr.String())
	}
	for _, line := range strings.Fields(string(out)) {
		var p, d float64
		if _, err := fmt.Sscanf(line, "%f,%f", &p, &d); err != nil {
			t.Fatalf("ffprobe said %q", line)
		}
		pts, dur = append(pts, p), append(dur, d)
	}
	return pts, dur
}

// checkContinuous fails unless each packet starts where the one before
// ended (within the millisecond timebase), the first at 0 less the
// decoder's delay (Opus' pre-skip, 6.5 ms); it returns their span.
func checkContinuous(t *testing.T, data []byte) (span float64) {
	t.Helper()
	pts, dur := probeTimes(t, data)
	if len(pts) == 0 || pts[0] > 0 || pts[0] < -0.01 {
		t.Fatalf("packets start at %v, want 0 less the pre-skip", pts[:min(1, len(pts))])
	}
	for i := 1; i < len(pts); i++ {
		if d := pts[i] - pts[i-1] - dur[i-1]; d > 0.0015 || d < -0.0015 {
			t.Fatalf("packet %d at %.3f s, %+.3f s from where packet %d ended", i, pts[i], d, i-1)
		}
	}
	return pts[len(pts)-1] + dur[len(dur)-1] - pts[0]
}

// rms is the loudness of s16le mono samples.
func rms(pcm []byte) float64 {
	var sum float64
	n := len(pcm) / 2
	for i := range n {
		v := float64(int16(binary.LittleEndian.Uint16(pcm[2*i:])))
		sum += v * v
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// A gap in the middle of a stream: the framer's WebM has the client's
// audio, then the silence, then the rest of the client's audio, on one
// continuous timeline; ffmpeg decodes the silence as silence, and the
// tone around it as the tone.
func TestWebMFramerGapFillIsSilenceOnOneTimeline(t *testing.T) {
	t.Parallel()
	chromium, err := os.ReadFile("testdata/mediarecorder.webm")
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []struct {
		name string
		data []byte
		tone bool // a steady tone around the gap
	}{
		{"ffmpeg mono", opusWebM(t, 2, 1), true},
		{"ffmpeg stereo", opusWebM(t, 2, 2), true},
		{"Chromium's MediaRecorder", chromium, false}, // 60 ms packets; the fake microphone beeps
	} {
		t.Run(src.name, func(t *testing.T) {
			w, units := scanWebM(t, src.data)
			half := len(units) / 2
			silence := w.silence(time.Second - time.Millisecond)
			if got := unitsAudio(silence); got != time.Second {
				t.Fatalf("silence of %v for a second", got)
			}
			var f webmFramer
			init := units[0].init
			stream := slices.Clone(f.frame(init, units[:half], true))
			stream = append(stream, f.frame(init, silence, false)...)
			stream = append(stream, f.frame(init, units[half:], false)...)

			end := checkContinuous(t, stream)
			want := unitsAudio(units) + time.Second
			if d := time.Duration(end*float64(time.Second)) - want; d.Abs() > time.Millisecond {
				t.Errorf("the timeline ends at %.3f s, want %v", end, want)
			}
			pcm := decodeWebM(t, stream)
			at := func(d time.Duration) int { return int(d.Seconds()*48000) * 2 }
			gapStart := unitsAudio(units[:half]) - 7*time.Millisecond // the decoder's delay (pre-skip)
			quiet := pcm[at(gapStart+40*time.Millisecond):at(gapStart+time.Second-20*time.Millisecond)]
			loud := pcm[at(gapStart-500*time.Millisecond):at(gapStart-100*time.Millisecond)]
			after := pcm[at(gapStart+time.Second+100*time.Millisecond):at(gapStart+time.Second+500*time.Millisecond)]
			t.Logf("decoded %v; power before %.0f, in the gap %.1f, after %.0f", pcmDuration(pcm), rms(loud), rms(quiet), rms(after))
			if rms(quiet) > 1 || src.tone && (rms(loud) < 1e6 || rms(after) < 1e6) {
				t.Errorf("power before the gap %.0f, in it %.1f, after it %.0f: want the tone, silence, the tone", rms(loud), rms(quiet), rms(after))
			}
		})
	}
}

// A new ffmpeg starting mid-stream (after a restart) gets a WebM whose
// timeline starts at 0, with the client's own clusters gone; and a
// stream longer than a block's 16-bit timecode reaches is cut into
// clusters that keep it exact.
func TestWebMFramerStartsAtZeroAndOpensClusters(t *testing.T) {
	t.Parallel()
	_, units := scanWebM(t, opusWebM(t, 3, 1))
	init := units[0].init
	var f webmFramer
	from := units[len(units)/2:]
	out := f.frame(init, from, true)
	if !bytes.HasPrefix(out, init) {
		t.Fatal("the init data does not come first")
	}
	if end := checkContinuous(t, out); time.Duration(end*float64(time.Second))-unitsAudio(from) > time.Millisecond {
		t.Errorf("ends at %.3f s, want %v", end, unitsAudio(from))
	}
	// 40 s of audio: 2000 blocks of 20 ms, in clusters of at most clusterSpan.
	long := make([]unit, 0, 2000)
	for len(long) < cap(long) {
		long = append(long, unit{data: silentBlock(1, false), dur: 20 * time.Millisecond})
	}
	out = f.frame(init, long, true)
	clusters := bytes.Count(out, []byte(clusterHead))
	if want := int(40*time.Second/clusterSpan) + 1; clusters < want-1 || clusters > want {
		t.Errorf("%d clusters for 40 s, want about %d", clusters, want)
	}
	if end := checkContinuous(t, out); end < 39.999 || end > 40.001 {
		t.Errorf("40 s of blocks end at %.3f s", end)
	}
}

// BlockGroups (a muxer that writes durations or DiscardPadding) are
// retimed too.
func TestWebMFramerRetimesBlockGroups(t *testing.T) {
	init := slices.Concat(ebmlHeader(), open(idSegment), el(idInfo, uintEl(idTimecodeScale, 1000000)), tracksEl("A_OPUS"))
	bg := el(idBlockGroup, uintEl(idBlockDuration, 40), el(idBlock, []byte{0x81, 0x12, 0x34, 0}, opusPacket(15, 1, 0)))
	units := []unit{
		{data: slices.Concat(open(idCluster), uintEl(idTimecode, 9000), simpleBlock(1, 77, opusPacket(31, 0, 0))), dur: 20 * time.Millisecond},
		{data: bg, dur: 40 * time.Millisecond},
		{data: simpleBlock(1, 99, opusPacket(31, 0, 0)), dur: 20 * time.Millisecond},
	}
	var f webmFramer
	out := f.frame(init, units, true)
	var s webmScanner
	got := feedWebM(t, &s, out)
	var times []int16
	for _, u := range got {
		d := u.data
		if bytes.HasPrefix(d, []byte(clusterHead)) {
			d = d[len(clusterHead):]
			h, _, _ := readHeader(d)
			d = d[h.len+int(h.size):]
		}
		h, _, _ := readHeader(d)
		var blk webmBlock
		if h.id == idSimpleBlock {
			blk, _ = parseBlock(d[h.len:])
		} else {
			blk, _ = parseBlockGroup(d[h.len:])
		}
		times = append(times, blk.timecode)
	}
	if !slices.Equal(times, []int16{0, 20, 60}) || s.cur.clusterTime != 0 {
		t.Errorf("blocks at %v in a cluster at %d, want [0 20 60] at 0", times, s.cur.clusterTime)
	}
	if sumDur(got) != 80*time.Millisecond {
		t.Errorf("the framed blocks carry %v, want 80ms", sumDur(got))
	}
}

// checkFramed: the WebM the framer writes of each segment of units is one
// the scanner reads back, with the same blocks carrying the same audio
// within a tick.
func checkFramed(t *testing.T, got []webmUnit) {
	t.Helper()
	var w webmUnits
	units := w.units(got)
	for start := 0; start < len(units); {
		end := start + 1
		for end < len(units) && units[end].init == nil {
			end++
		}
		seg := units[start:end]
		start = end
		si, err := parseInit(seg[0].init)
		if err != nil {
			t.Fatalf("the scanner's init data does not parse: %v", err)
		}
		var f webmFramer
		out := f.frame(seg[0].init, seg, true)
		var s webmScanner
		back, err := s.feed(out)
		if err != nil {
			t.Fatalf("the framer's WebM is refused: %v", err)
		}
		back = append(back, s.flush()...)
		if len(back) != len(seg) {
			t.Fatalf("%d units framed, %d read back", len(seg), len(back))
		}
		// The last block of the timing track is timed by an estimate
		// when read back alone (nothing follows it), and so are the
		// blocks of other tracks behind it.
		last := len(seg) - 1
		for last > 0 && blockTrack(seg[last].data) != si.timing {
			last--
		}
		for i := range last {
			if d := back[i].dur - seg[i].dur; d.Abs() > time.Duration(si.scale) {
				t.Fatalf("unit %d carried %v, framed %v", i, seg[i].dur, back[i].dur)
			}
		}
	}
}

// framedBlocks reads a framed WebM (1 ms ticks) back: each block's time
// (its cluster's and its own) and its frames.
func framedBlocks(t *testing.T, data []byte) (times []time.Duration, frames [][]byte) {
	t.Helper()
	var s webmScanner
	units := feedWebM(t, &s, data)
	var cluster int64
	for _, u := range units {
		d := u.data
		if bytes.HasPrefix(d, []byte(clusterHead)) {
			d = d[len(clusterHead):]
			h, _, _ := readHeader(d)
			v, _ := readUint(d[h.len : h.len+int(h.size)])
			cluster, d = int64(v), d[h.len+int(h.size):]
		}
		h, _, _ := readHeader(d)
		blk, err := parseBlock(d[h.len:])
		if err != nil || h.id != idSimpleBlock {
			t.Fatalf("not a SimpleBlock: % x", d)
		}
		times = append(times, time.Duration(cluster+int64(blk.timecode))*time.Millisecond)
		frames = append(frames, blk.frames...)
	}
	return times, frames
}

// The session's gap fill for WebM: ffmpeg reads the client's blocks, then
// silent Opus packets, every block timed where the one before ended,
// though the client's own clusters said 0 s and 1 s.
func TestWebMGapFillFeedsSilentOpusOnOneTimeline(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) {
		c.GapFill = 200 * time.Millisecond
		c.FFmpeg.InputFormat = "webm"
	})
	stream, _, _ := mediaRecorderLike() // 6 blocks of 20 ms
	if _, err := r.Write(context.Background(), "w", testSrc, stream); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a second of silence", func() bool { info, _ := r.Info("w"); return info.Silence >= 1 })
	closeRegistry(t, r)
	got := received(t, dir, "w")
	if len(got) != 1 {
		t.Fatalf("%d ffmpegs read data", len(got))
	}
	times, frames := framedBlocks(t, got[0])
	if len(frames) < 6+50 {
		t.Fatalf("%d blocks, want the 6 sent and a second of silence", len(frames))
	}
	for i, f := range frames {
		want := opusPacket(31, 0, 1)
		if i >= 6 {
			want = opusSilence(false)
		}
		if !bytes.Equal(f, want) || times[i] != time.Duration(i)*20*time.Millisecond {
			t.Fatalf("block %d at %v: % x; want % x at %v", i, times[i], f, want, time.Duration(i)*20*time.Millisecond)
		}
	}
}

// blockTrack is the track of the block in a unit's data, after any
// Cluster header and Timecode; 0 when there is none.
func blockTrack(data []byte) uint64 {
	for len(data) > 0 {
		h, ok, err := readHeader(data)
		if err != nil || !ok {
			return 0
		}
		if h.size < 0 {
			data = data[h.len:]
			continue
		}
		if h.size > int64(len(data)-h.len) {
			return 0
		}
		payload := data[h.len : h.len+int(h.size)]
		var blk webmBlock
		switch h.id {
		case idSimpleBlock:
			blk, err = parseBlock(payload)
		case idBlockGroup:
			blk, err = parseBlockGroup(payload)
		default:
			data = data[h.len+int(h.size):]
			continue
		}
		if err != nil {
			return 0
		}
		return blk.track
	}
	return 0
}
