package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/rtmpplay"
	"ffmpeg-publisher/internal/rtmptest"
)

// startSteps is one ffmpeg start, the way a session runs it (MP3 in FLV
// tags, AAC out, to nginx-rtmp), cut into its steps.
type startSteps struct {
	load     time.Duration // exec until ffmpeg blocks reading stdin: loading and linking its libraries, parsing args
	probe    time.Duration // first frame written until the RTMP server sees the connection: probing the input
	publish  time.Duration // connection until the server logs the publish: RTMP handshake, connect, publish
	opened   time.Duration // first frame until ffmpeg's first progress report (its output header written)
	audio    time.Duration // first frame until a subscriber gets the first audio tag
	frameGap time.Duration // how long the first frame waited: 0 unless given
}

// startSection measures n ffmpeg starts one after another and reports the
// median of each step, with first audio as a client sees it with the
// process started at its first byte and with it prestarted lead before.
func (e env) startSection(b *strings.Builder, n int, lead time.Duration) {
	dir, err := os.MkdirTemp("", "ffmpeg-publisher-start")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	rtmp, err := rtmptest.Launch(dir)
	if err != nil {
		fail(err)
	}
	defer rtmp.Stop()
	first, _ := flvTags(chunks(e.audio, 100*time.Millisecond)[0], 0) // a session's first write
	var all []startSteps
	for i := range n {
		st, err := measureStart(rtmp, fmt.Sprintf("start%d", i), first)
		if err != nil {
			fail(err)
		}
		all = append(all, st)
	}
	med := func(f func(startSteps) time.Duration) time.Duration {
		v := make([]time.Duration, len(all))
		for i, s := range all {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	load, audio := med(func(s startSteps) time.Duration { return s.load }), med(func(s startSteps) time.Duration { return s.audio })
	fmt.Fprintf(b, "## An ffmpeg start, step by step (median of %d, one at a time)\n\n", n)
	b.WriteString("| exec → reading stdin (load) | first frame → RTMP connection (probe) | connection → publish | first frame → output open | first frame → audio at a subscriber | first audio, started at the first byte | first audio, prestarted " + ms(lead) + " before |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n\n", ms(load),
		ms(med(func(s startSteps) time.Duration { return s.probe })),
		ms(med(func(s startSteps) time.Duration { return s.publish })),
		ms(med(func(s startSteps) time.Duration { return s.opened })),
		ms(audio), ms(load+audio), ms(max(0, load-lead)+audio))
}

// measureStart starts one ffmpeg and times its steps.
func measureStart(rtmp *rtmptest.Server, name string, first []byte) (startSteps, error) {
	var st startSteps
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gotAudio := make(chan time.Time, 1)
	conns, t00 := rtmp.ConnectionCount(), time.Now() // before the subscriber can connect
	go rtmpplay.Play(ctx, rtmp.URL+"/"+name, func(m rtmpplay.Message) {
		if m.Type == 8 && (m.First>>4 != 10 || m.Second != 0) {
			select {
			case gotAudio <- m.Arrived:
			default:
			}
		}
	})
	for rtmp.ConnectionCount() == conns { // the subscriber is in
		if time.Since(t00) > 10*time.Second {
			return st, fmt.Errorf("the subscriber never connected")
		}
		time.Sleep(time.Millisecond)
	}
	conns = rtmp.ConnectionCount()
	cmd := exec.Command("ffmpeg", ffpipe.Args(ffpipe.Config{InputFormat: "flv", Target: rtmp.URL + "/" + name})...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return st, err
	}
	defer pr.Close()
	cmd.ExtraFiles = []*os.File{pw}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return st, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return st, err
	}
	pw.Close()
	defer func() { stdin.Close(); cmd.Wait() }()
	sys := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/syscall"
	for { // "0 0x0 ...": blocked in read(0, ...)
		b, _ := os.ReadFile(sys)
		if bytes.HasPrefix(b, []byte("0 0x0 ")) {
			break
		}
		if time.Since(t0) > 10*time.Second {
			return st, fmt.Errorf("ffmpeg never read its stdin")
		}
		time.Sleep(time.Millisecond)
	}
	st.load = time.Since(t0)
	opened := make(chan time.Time, 1)
	go func() {
		var one [1]byte
		if _, err := pr.Read(one[:]); err == nil {
			opened <- time.Now()
		}
		io.Copy(io.Discard, pr)
	}()
	tw := time.Now()
	if _, err := stdin.Write(first); err != nil {
		return st, err
	}
	for rtmp.ConnectionCount() == conns {
		if time.Since(tw) > 10*time.Second {
			return st, fmt.Errorf("ffmpeg never connected")
		}
		time.Sleep(time.Millisecond)
	}
	st.probe = time.Since(tw)
	for rtmp.PublishCount(name) == 0 {
		if time.Since(tw) > 10*time.Second {
			return st, fmt.Errorf("ffmpeg never published")
		}
		time.Sleep(time.Millisecond)
	}
	st.publish = time.Since(tw) - st.probe
	select {
	case t := <-opened:
		st.opened = t.Sub(tw)
	case <-time.After(10 * time.Second):
		return st, fmt.Errorf("no progress report")
	}
	select {
	case t := <-gotAudio:
		st.audio = t.Sub(tw)
	case <-time.After(10 * time.Second):
		return st, fmt.Errorf("no audio at the subscriber")
	}
	return st, nil
}
