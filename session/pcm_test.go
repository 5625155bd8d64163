package session

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// pcmBytes is n bytes that tell their positions apart: every four hold
// their number.
func pcmBytes(n int) []byte {
	b := make([]byte, n+3)
	for i := 0; i < n; i += 4 {
		binary.LittleEndian.PutUint32(b[i:], uint32(i/4))
	}
	return b[:n]
}

func TestCheckPCM(t *testing.T) {
	for _, rate := range PCMRates() {
		for _, ch := range []int{1, 2} {
			if err := CheckPCM(rate, ch); err != nil {
				t.Errorf("%d Hz × %d: %v", rate, ch, err)
			}
		}
	}
	for _, bad := range [][2]int{{44000, 1}, {16000, 0}, {16000, 3}, {0, 1}, {96000, 2}} {
		err := CheckPCM(bad[0], bad[1])
		if pe := (*PCMError)(nil); !errors.As(err, &pe) || !strings.Contains(err.Error(), "8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000") ||
			!strings.Contains(err.Error(), "channels 1 or 2") {
			t.Errorf("%v: %v, want a refusal listing the accepted values", bad, err)
		}
	}
}

// TestPCMUnits: writes cut anywhere (an odd byte, half a stereo frame)
// come out as whole sample frames, in order, in units of at most 20 ms,
// whose durations add up to the frames passed on.
func TestPCMUnits(t *testing.T) {
	for _, tc := range []struct{ rate, channels int }{{16000, 1}, {44100, 2}, {11025, 2}, {8000, 1}} {
		m := newPCMUnits(tc.rate, tc.channels)
		frame := 2 * tc.channels
		data := pcmBytes(2 * tc.rate * frame) // 2 s
		var out []byte
		var audio time.Duration
		rest := data
		for _, n := range []int{1, 3, 4093, 5, 2, 777, 12345, 1} {
			us, err := m.feed(rest[:n])
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range us {
				if len(u.data)%frame != 0 || u.dur > pcmUnit || u.silence || u.newSeg {
					t.Fatalf("%d Hz × %d: unit of %d bytes, %s", tc.rate, tc.channels, len(u.data), u.dur)
				}
				out = append(out, u.data...)
				audio += u.dur
			}
			rest = rest[n:]
			if len(out)+m.carried != len(data)-len(rest) {
				t.Fatalf("%d Hz × %d: %d bytes out and %d carried of %d fed", tc.rate, tc.channels, len(out), m.carried, len(data)-len(rest))
			}
		}
		us, _ := m.feed(rest)
		for _, u := range us {
			out = append(out, u.data...)
			audio += u.dur
		}
		if !bytes.Equal(out, data) || m.carried != 0 {
			t.Fatalf("%d Hz × %d: %d bytes out of %d, %d carried", tc.rate, tc.channels, len(out), len(data), m.carried)
		}
		if d := 2*time.Second - audio; d < 0 || d > time.Microsecond {
			t.Errorf("%d Hz × %d: units last %s, want 2 s", tc.rate, tc.channels, audio)
		}
	}
}

// TestPCMRollback: a refused write leaves the carried bytes as they were,
// so its retry is cut as a first try would have been.
func TestPCMRollback(t *testing.T) {
	m := newPCMUnits(48000, 2)
	m.feed([]byte{1, 2, 3}) // three bytes of a four-byte frame carried
	m.mark()
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	us, _ := m.feed([]byte{4, 5, 6, 7, 8, 9})
	if len(us) != 1 || !bytes.Equal(us[0].data, want) || !bytes.Equal(m.carry[:m.carried], []byte{9}) {
		t.Fatalf("first try: %v, carry % x", us, m.carry[:m.carried])
	}
	m.rollback()
	if !bytes.Equal(m.carry[:m.carried], []byte{1, 2, 3}) {
		t.Fatalf("rollback left carry % x", m.carry[:m.carried])
	}
	us, _ = m.feed([]byte{4, 5, 6, 7, 8, 9})
	if len(us) != 1 || !bytes.Equal(us[0].data, want) || !bytes.Equal(m.carry[:m.carried], []byte{9}) {
		t.Fatalf("retry: %v, carry % x", us, m.carry[:m.carried])
	}
}

func TestPCMSilence(t *testing.T) {
	m := newPCMUnits(22050, 2)
	us := m.silence(time.Second)
	if got := unitsAudio(us); got < time.Second || got > time.Second+pcmUnit {
		t.Fatalf("%s of silence for 1 s", got)
	}
	for _, u := range us {
		if !u.silence || len(u.data)%4 != 0 || bytes.Count(u.data, []byte{0}) != len(u.data) {
			t.Fatalf("silence unit of %d bytes: %v", len(u.data), u.silence)
		}
	}
}

// FuzzPCMCarry cuts a stream into writes anywhere, refusing some (mark,
// feed, rollback, as a full buffer does) and retrying them: what comes out
// is the stream's whole sample frames, in order, nothing dropped or added.
func FuzzPCMCarry(f *testing.F) {
	f.Add(pcmBytes(1001), uint64(1), uint8(2))
	f.Add(pcmBytes(7), uint64(2), uint8(1))
	f.Add(pcmBytes(4000), uint64(3), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, channels uint8) {
		ch := int(channels)%MaxPCMChannels + 1
		rng := rand.New(rand.NewPCG(seed, seed>>1))
		m := newPCMUnits(PCMRates()[int(seed%9)], ch)
		var out []byte
		for rest := data; len(rest) > 0; {
			n := min(len(rest), rng.IntN(9)+rng.IntN(2)*rng.IntN(3000))
			m.mark()
			if rng.IntN(4) == 0 {
				m.feed(rest[:n])
				m.rollback() // refused: fed again below
			}
			us, err := m.feed(rest[:n])
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range us {
				if len(u.data) == 0 || len(u.data)%(2*ch) != 0 || u.dur > pcmUnit {
					t.Fatalf("unit of %d bytes, %s", len(u.data), u.dur)
				}
				out = append(out, u.data...)
			}
			rest = rest[n:]
		}
		whole := len(data) - len(data)%(2*ch)
		if !bytes.Equal(out, data[:whole]) || m.carried != len(data)-whole {
			t.Fatalf("%d bytes out, %d carried, of %d", len(out), m.carried, len(data))
		}
	})
}

var pcmSrc = Source{Transport: "test", Format: "pcm", Rate: 8000, Channels: 2}

// TestPCMSession: a PCM stream counts its seconds, its gap is filled with
// zeros in whole stereo frames, and the stream goes to ffmpeg whole.
func TestPCMSession(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.Normal, func(c *Config) { c.GapFill = 200 * time.Millisecond })
	audio := pcmBytes(8000 * 4 / 2) // 500 ms
	for _, p := range [][]byte{audio[:3], audio[3:1001], audio[1001:]} {
		if _, err := r.Write(context.Background(), "pcm", pcmSrc, p); err != nil {
			t.Fatal(err)
		}
	}
	if info, _ := r.Info("pcm"); info.Seconds < 0.499 || info.Seconds > 0.501 {
		t.Errorf("%.4f s counted, want 0.5", info.Seconds)
	}
	waitFor(t, "a second of silence", func() bool { info, _ := r.Info("pcm"); return info.Silence >= 1 })
	closeRegistry(t, r)
	got := received(t, dir, "pcm")
	if len(got) != 1 || !bytes.HasPrefix(got[0], audio) {
		t.Fatal("the client's audio is not first")
	}
	rest := got[0][len(audio):]
	if len(rest) < 8000*4 || len(rest)%4 != 0 || bytes.Count(rest, []byte{0}) != len(rest) {
		t.Fatalf("after the audio: %d bytes, not zeros in stereo frames", len(rest))
	}
}

// TestPCMReplayAfterFFmpegDies: every ffmpeg dies after 40 kB (1.25 s);
// the next one starts on a sample frame at or before the first audio the
// dead one did not report sent, so the stream arrives whole and in order.
func TestPCMReplayAfterFFmpegDies(t *testing.T) {
	r, dir := newTestRegistry(t, fakeffmpeg.DieAfter+"40000", nil)
	audio := pcmBytes(8000 * 4 * 3) // 3 s
	for rest := audio; len(rest) > 0; {
		n := min(len(rest), 3001)
		if _, err := r.Write(context.Background(), "pcm", pcmSrc, rest[:n]); errors.Is(err, ErrBufferFull) {
			time.Sleep(50 * time.Millisecond)
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	closeRegistry(t, r)
	runs := received(t, dir, "pcm")
	if len(runs) < 2 {
		t.Fatalf("%d ffmpeg runs, want the first to die", len(runs))
	}
	covered := 0
	for i, run := range runs {
		at := bytes.Index(audio, run[:min(len(run), 64)])
		if at < 0 || at%4 != 0 || at > covered || !bytes.Equal(audio[at:at+len(run)], run) {
			t.Fatalf("run %d (%d bytes) is not the stream from a stereo frame at or before byte %d (found at %d)", i, len(run), covered, at)
		}
		covered = max(covered, at+len(run))
	}
	if covered != len(audio) {
		t.Fatalf("%d of %d bytes arrived", covered, len(audio))
	}
}
