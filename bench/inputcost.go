package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"ffmpeg-publisher/ffpipe"
)

// inputGroup is one way of feeding ffmpeg the same MP3 in the input
// section: the publisher's (FLV tags, progress read on a pipe) and a bare
// pipe's (raw MP3, progress thrown away).
type inputGroup struct {
	name, format string
	progressPipe bool
}

var inputGroups = []inputGroup{
	{"raw MP3, progress to /dev/null (bare)", "mp3", false},
	{"FLV tags, progress to /dev/null", "flv", false},
	{"FLV tags, progress on a pipe (the publisher's)", "flv", true},
}

// inputSection runs perGroup ffmpegs of each group at once, all fed the
// same audio in 100 ms writes at real-time pace by this process, each
// encoding to /dev/null, and sums each group's CPU from
// /proc/PID/schedstat over the steady part: the input's cost with every
// other condition shared.
func (e env) inputSection(b *strings.Builder, perGroup, rounds int) {
	cs := chunks(e.audio, 100*time.Millisecond)
	cs = cs[:min(len(cs), 200)] // 20 s
	flv := make([][]byte, len(cs))
	var at time.Duration
	for i, c := range cs {
		flv[i], at = flvTags(c, at)
	}
	b.WriteString("## ffmpeg's CPU by input (all groups at once, 100 ms writes, AAC 64k to /dev/null)\n\n")
	fmt.Fprintf(b, "%d ffmpegs per group; CPU from /proc/PID/schedstat between the 5th second and the 19th; each round started anew.\n\n", perGroup)
	b.WriteString("| round |")
	for _, g := range inputGroups {
		b.WriteString(" " + g.name + " |")
	}
	b.WriteString("\n| --- |" + strings.Repeat(" --- |", len(inputGroups)) + "\n")
	for r := range rounds {
		sums, err := inputRound(perGroup, cs, flv)
		if err != nil {
			fail(err)
		}
		fmt.Fprintf(b, "| %d |", r+1)
		for i := range inputGroups {
			fmt.Fprintf(b, " %.0f ms (%+.1f%%) |", sums[i]*1e3, 100*(sums[i]/sums[0]-1))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

func inputRound(perGroup int, cs []chunk, flv [][]byte) ([]float64, error) {
	type feeder struct {
		group int
		cmd   *exec.Cmd
		in    io.WriteCloser
	}
	var all []*feeder
	defer func() {
		for _, f := range all {
			f.in.Close()
			f.cmd.Wait()
		}
	}()
	for range perGroup {
		for gi, g := range inputGroups {
			cmd := exec.Command("ffmpeg", append([]string{"-y"}, ffpipe.Args(ffpipe.Config{InputFormat: g.format, Target: "/dev/null", OutputFormat: "flv"})...)...)
			var progress *os.File
			if g.progressPipe {
				r, w, err := os.Pipe()
				if err != nil {
					return nil, err
				}
				go func() { io.Copy(io.Discard, r); r.Close() }()
				progress = w
			} else {
				f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
				if err != nil {
					return nil, err
				}
				progress = f
			}
			cmd.ExtraFiles = []*os.File{progress}
			in, err := cmd.StdinPipe()
			if err != nil {
				return nil, err
			}
			err = cmd.Start()
			progress.Close()
			if err != nil {
				return nil, err
			}
			all = append(all, &feeder{gi, cmd, in})
		}
	}
	time.Sleep(3 * time.Second) // every ffmpeg loaded before the clock starts
	sums := make([]float64, len(inputGroups))
	var at5 []float64
	start := time.Now()
	for i, c := range cs {
		time.Sleep(time.Until(start.Add(c.from)))
		if i == 50 || i == len(cs)-10 {
			now := make([]float64, len(all))
			for j, f := range all {
				now[j] = schedSeconds(f.cmd.Process.Pid)
			}
			if at5 == nil {
				at5 = now
			} else {
				for j, f := range all {
					sums[f.group] += now[j] - at5[j]
				}
			}
		}
		for _, f := range all {
			data := c.data
			if inputGroups[f.group].format == "flv" {
				data = flv[i]
			}
			if _, err := f.in.Write(data); err != nil {
				return nil, fmt.Errorf("ffmpeg (%s) stopped reading: %w", inputGroups[f.group].name, err)
			}
		}
	}
	return sums, nil
}

// flvTags frames a chunk's MP3 frames one FLV audio tag each, as the
// session does, the first at media time at (which, at 0, also gets the
// FLV header); it returns the time after the chunk.
func flvTags(c chunk, at time.Duration) ([]byte, time.Duration) {
	var out []byte
	if at == 0 {
		out = append(out, 'F', 'L', 'V', 1, 4, 0, 0, 0, 9, 0, 0, 0, 0)
	}
	for data := c.data; len(data) >= 4; {
		n := frameLen(data)
		ms := uint32(at / time.Millisecond)
		size := n + 1
		out = append(out, 8, byte(size>>16), byte(size>>8), byte(size), byte(ms>>16), byte(ms>>8), byte(ms), byte(ms>>24), 0, 0, 0)
		out = append(out, 0x2e) // MP3, 44 kHz, 16-bit, mono
		out = append(out, data[:n]...)
		out = binary.BigEndian.AppendUint32(out, uint32(11+size))
		data = data[n:]
		at += frameDur(1)
	}
	return out, at
}

// schedSeconds is the CPU time pid has run, from the scheduler's own
// nanosecond count (schedstat), not the tick-rounded /proc/PID/stat.
func schedSeconds(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/schedstat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	ns, _ := strconv.ParseInt(f[0], 10, 64)
	return float64(ns) / 1e9
}
