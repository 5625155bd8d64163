package admission

import (
	"bufio"
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"ffmpeg-publisher/session"
)

// DefaultPressureFile is the kernel's CPU pressure (PSI), present since
// Linux 4.20 when enabled; a cgroup's own is its cpu.pressure file.
const DefaultPressureFile = "/proc/pressure/cpu"

// Machine returns the server's probe: the streams come from loads (the
// registry's Loads), the CPU pressure from pressureFile ("" or a file that
// cannot be read: unknown), the memory from mem.
func Machine(loads func() []session.StreamLoad, pressureFile string, mem Memory) Probe {
	return func() Load {
		l := FromStreams(loads())
		l.Memory, l.MemoryTotal = mem.Read()
		l.CPU = -1
		if pressureFile != "" {
			if b, err := os.ReadFile(pressureFile); err == nil {
				l.CPU = ParsePressure(b)
			}
		}
		return l
	}
}

// lagQuantile: a few streams may lag for reasons of their own (a slow
// client's burst, a restart); a loaded machine makes most of them lag.
const lagQuantile = 0.9

// FromStreams measures the streams: the lag of those publishing (an RTMP
// server that stopped reading is not this machine's load) and the count of
// those whose ffmpeg has not published yet. CPU is left unknown.
func FromStreams(streams []session.StreamLoad) Load {
	l := Load{CPU: -1}
	lags := make([]time.Duration, 0, len(streams))
	for _, in := range streams {
		if in.State != session.StateNew && in.State != session.StateLive {
			continue
		}
		switch in.FFmpeg {
		case "not started", "starting":
			if !in.Waiting {
				l.Starting++
			}
		case "publishing":
			if !in.Stalled {
				lags = append(lags, in.Held)
			}
		}
	}
	// Never the slowest stream alone: one client's burst or one slow RTMP
	// server must not close the machine to new streams.
	if l.Streams = len(lags); l.Streams >= 2 {
		slices.Sort(lags)
		i := int(float64(len(lags))*lagQuantile+0.999999) - 1 // nearest rank
		l.Lag = lags[min(max(0, i), len(lags)-2)]
	}
	return l
}

// ParsePressure returns "some avg10" from PSI text (/proc/pressure/cpu or
// a cgroup's cpu.pressure), or -1 when it has none.
func ParsePressure(b []byte) float64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "some" {
			continue
		}
		for _, f := range fields[1:] {
			if v, ok := strings.CutPrefix(f, "avg10="); ok {
				if x, err := strconv.ParseFloat(v, 64); err == nil && x >= 0 {
					return x
				}
			}
		}
	}
	return -1
}
