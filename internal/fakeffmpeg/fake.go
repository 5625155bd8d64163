// Package fakeffmpeg lets a test binary stand in for ffmpeg: a package's
// TestMain calls Main first, and tests point the ffmpeg binary at
// os.Args[0] with the environment from Env. The fake copies stdin to a file
// named after the last element of the target URL and its pid, writes
// -progress reports to fd 3, and can misbehave on request (Mode).
package fakeffmpeg

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	envOn   = "FAKE_FFMPEG"
	envDir  = "FAKE_FFMPEG_DIR"
	envMode = "FAKE_FFMPEG_MODE"
)

// Modes of misbehaviour.
const (
	Normal    = ""           // copy stdin until EOF, exit 0
	Fail      = "fail"       // print a connection error and exit 1 without reading
	FailAfter = "fail-after" // exit 1 after the first read (a publish that breaks)
	IgnoreInt = "ignore-int" // ignore SIGINT and stdin EOF: only SIGKILL ends it
	NoRead    = "no-read"    // never read stdin (a stalled encoder)
	Stall     = "stall"      // read stdin, but report progress only once (a hung RTMP server)
	// SlowStart takes 1.5 s to load, silent (a start on a busy machine),
	// then reports its output open with out_time 0 as ffmpeg does, and
	// produces output only 1 s later; then it behaves as Normal.
	SlowStart = "slow-start"
	// NameHeld is refused as nginx-rtmp refuses a second publisher of a
	// name, while a file called after the target with ".held" exists in
	// the directory; then it behaves as Normal.
	NameHeld = "name-held"
	// Leak names its target URL in every form ffmpeg 5.1 prints it in
	// (whole, as path, app and stream name, in the publish command), then
	// fails as when the RTMP server closes the connection.
	Leak = "leak"
	// Lag holds the last LagBehind of FLV input before it "sends" it
	// (writes it out and reports it): what a killed ffmpeg loses.
	Lag = "lag"
	// DieAfter + N ("die-after:5000") exits 1 once it has read N bytes.
	DieAfter = "die-after:"
	// RefusedWhileHeld is refused as by a server that is down while the
	// ".held" file of NameHeld exists; then it behaves as Normal.
	RefusedWhileHeld = "refused-while-held"
	// RefuseAfter + a duration ("refuse-after:300ms") waits, then fails as
	// a refused connection does: a slow server that refuses.
	RefuseAfter = "refuse-after:"
	// Paced reads and discards stdin and reports progress as ffmpeg does,
	// every 0.5 s with its output time the wall clock since the first
	// byte, and writes nothing else: the publisher's own cost, measured
	// without ffmpeg's (go run ./bench -fake-ffmpeg).
	Paced = "paced"
)

// LagBehind is how much audio Lag holds.
const LagBehind = 300 * time.Millisecond

// HoldName makes NameHeld fakes for name refused until release is called.
func HoldName(dir, name string) (release func()) {
	f := filepath.Join(dir, name+".held")
	os.WriteFile(f, nil, 0o644)
	return func() { os.Remove(f) }
}

// Env returns the environment that turns a child started from the test
// binary into the fake, writing what it reads under dir.
func Env(dir, mode string) []string {
	return []string{envOn + "=1", envDir + "=" + dir, envMode + "=" + mode}
}

// Main runs the fake and exits if the environment asks for it; otherwise it
// returns at once.
func Main() {
	if os.Getenv(envOn) != "1" {
		return
	}
	os.Exit(run(os.Args[1:], os.Getenv(envDir), os.Getenv(envMode)))
}

// OutputFiles lists what fakes wrote for a target name, in the order they
// started (PIDs wrap and differ in length; the names lead with the start time).
func OutputFiles(dir, name string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, name+".*.bin"))
	return m
}

func run(args []string, dir, mode string) int {
	if len(args) > 0 && args[len(args)-1] == "-version" {
		fmt.Println("ffmpeg version fake") // the server's check that its ffmpeg runs
		return 0
	}
	started := time.Now().UnixNano()
	target, url := "out", ""
	if len(args) > 0 {
		url = args[len(args)-1]
		target = path.Base(url)
	}
	progress := os.NewFile(3, "progress")
	dieAfter := int64(-1)
	if v, ok := strings.CutPrefix(mode, DieAfter); ok {
		dieAfter, _ = strconv.ParseInt(v, 10, 64)
	}
	if v, ok := strings.CutPrefix(mode, RefuseAfter); ok {
		go io.Copy(io.Discard, os.Stdin) // ffmpeg reads its input before it connects
		d, _ := time.ParseDuration(v)
		time.Sleep(d)
		mode = Fail
	}
	if mode == SlowStart {
		time.Sleep(1500 * time.Millisecond)
	}
	// ffmpeg's first words, once it has loaded (ffpipe.Start waits for
	// them before it starts another).
	fmt.Fprintln(os.Stderr, "[info] ffmpeg stats and -progress period set to 0.5.")
	switch mode {
	case NameHeld:
		if _, err := os.Stat(filepath.Join(dir, target+".held")); err == nil {
			fmt.Fprintln(os.Stderr, "[rtmp @ 0x5555] [error] Server error: Already publishing")
			fmt.Fprintf(os.Stderr, "[error] %s: Operation not permitted\n", target)
			return 1
		}
	case Leak:
		leak(url)
		return 1
	case RefusedWhileHeld:
		if _, err := os.Stat(filepath.Join(dir, target+".held")); err == nil {
			fmt.Fprintf(os.Stderr, "[tcp @ 0x5555] [error] Connection to tcp://127.0.0.1:1 failed: Connection refused\n")
			return 1
		}
	case Fail:
		fmt.Fprintf(os.Stderr, "[tcp @ 0x5555] [error] Connection to tcp://127.0.0.1:1 failed: Connection refused\n")
		fmt.Fprintf(os.Stderr, "[error] %s: Connection refused\n", target)
		return 1
	case IgnoreInt:
		signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	case NoRead:
		time.Sleep(time.Hour)
		return 0
	case SlowStart:
		fmt.Fprintf(progress, "total_size=0\nout_time_us=0\nprogress=continue\n")
		time.Sleep(time.Second)
	}
	if mode == Paced {
		return paced(progress)
	}
	out, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s.%020d-%d.bin", target, started, os.Getpid())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "[fatal]", err)
		return 1
	}
	defer out.Close()
	buf := make([]byte, 32*1024)
	var total, reads, read int64
	var unwrap *flvUnwrapper // input framed in FLV: keep the payloads only
	for i := 0; i+2 < len(args); i++ {
		if args[i] == "-f" && args[i+1] == "flv" && args[i+2] == "-i" {
			unwrap = &flvUnwrapper{}
		}
	}
	rawRate := rawBytesPerSecond(args)
	if unwrap != nil && mode == Lag {
		unwrap.lag = LagBehind
	}
	for {
		n, err := os.Stdin.Read(buf)
		read += int64(n)
		if n > 0 {
			data := buf[:n]
			var tags []tag
			if unwrap == nil {
				out.Write(data)
				total += int64(len(data))
				if mode != Stall || reads == 0 {
					fmt.Fprintf(progress, "total_size=%d\nout_time_us=%d\nprogress=continue\n", total, total*1e6/rawRate)
				}
			} else {
				tags = unwrap.feed(data, false)
				if reads == 0 && len(tags) == 0 {
					// ffmpeg opens its output once it has the first frame,
					// with out_time 0, whatever it holds back.
					fmt.Fprintf(progress, "total_size=0\nout_time_us=0\nprogress=continue\n")
				}
			}
			// FLV input: each tag is "sent" (written out) and reported on
			// its own, as ffmpeg reports what it has muxed.
			for i, tg := range tags {
				out.Write(tg.payload)
				total += int64(len(tg.payload))
				if mode != Stall || (reads == 0 && i == 0) {
					fmt.Fprintf(progress, "total_size=%d\nout_time_us=%d\nprogress=continue\n", total, tg.endUS)
				}
			}
			reads++
			fmt.Fprintf(os.Stderr, "size=%dkB time=00:00:00.00\r", total/1024)
			if dieAfter >= 0 && read >= dieAfter {
				fmt.Fprintln(os.Stderr, "[flv @ 0x1] [error] Failed to write packet: Broken pipe")
				return 1
			}
			if mode == FailAfter {
				fmt.Fprintln(os.Stderr, "[flv @ 0x1] [error] Failed to write packet: Broken pipe")
				return 1
			}
		}
		if err == io.EOF {
			if unwrap != nil {
				for _, tg := range unwrap.feed(nil, true) {
					out.Write(tg.payload)
				}
			}
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "[error] read:", err)
			return 1
		}
	}
	fmt.Fprintln(os.Stderr, "[info] done")
	fmt.Fprintf(progress, "progress=end\n")
	if mode == IgnoreInt {
		time.Sleep(time.Hour)
	}
	return 0
}

func paced(progress *os.File) int {
	buf := make([]byte, 32*1024)
	n, err := os.Stdin.Read(buf)
	if n == 0 && err != nil {
		return 0
	}
	first := time.Now()
	fmt.Fprintf(progress, "total_size=0\nout_time_us=0\nprogress=continue\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := os.Stdin.Read(buf); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			fmt.Fprintf(progress, "out_time_us=%d\nprogress=continue\n", time.Since(first).Microseconds())
		case <-done:
			fmt.Fprintf(progress, "progress=end\n")
			return 0
		}
	}
}

// flvUnwrapper turns an FLV byte stream into the concatenated payloads of
// its audio tags (without each tag's one-byte audio header), so that a test
// reads back exactly the MP3 frames the session framed. It tracks the media
// time sent: the end of the last tag passed on (its timestamp and its MP3
// frame's duration), and with lag holds tags that recent.
type flvUnwrapper struct {
	pending []byte
	started bool
	lag     time.Duration
	held    []tag
	aacRate int64 // of the AAC sequence header; 0 before one
}

type tag struct {
	payload []byte
	endUS   int64
}

func (u *flvUnwrapper) feed(p []byte, flush bool) []tag {
	u.pending = append(u.pending, p...)
	if !u.started {
		if len(u.pending) < 13 {
			return nil
		}
		u.pending, u.started = u.pending[13:], true
	}
	for len(u.pending) >= 11 {
		size := int(u.pending[1])<<16 | int(u.pending[2])<<8 | int(u.pending[3])
		if len(u.pending) < 11+size+4 {
			break
		}
		ts := int64(u.pending[4])<<16 | int64(u.pending[5])<<8 | int64(u.pending[6]) | int64(u.pending[7])<<24
		switch body := u.pending[11 : 11+size]; {
		case u.pending[0] != 8 || size == 0:
		case body[0]>>4 == 10 && size >= 4 && body[1] == 0: // AAC: its AudioSpecificConfig
			u.aacRate = aacRates[min(int(body[2]&7)<<1|int(body[3]>>7), len(aacRates)-1)]
		case body[0]>>4 == 10 && size >= 2 && u.aacRate > 0: // a raw AAC frame of 1024 samples
			u.held = append(u.held, tag{append([]byte(nil), body[2:]...), ts*1000 + 1024e6/u.aacRate})
		case body[0]>>4 != 10:
			payload := append([]byte(nil), body[1:]...)
			u.held = append(u.held, tag{payload, ts*1000 + mp3FrameUS(payload)})
		}
		u.pending = u.pending[11+size+4:]
	}
	u.pending = append(u.pending[:0:0], u.pending...)
	newest := int64(0)
	if len(u.held) > 0 {
		newest = u.held[len(u.held)-1].endUS
	}
	n := 0
	for ; n < len(u.held); n++ {
		if !flush && newest-u.held[n].endUS < u.lag.Microseconds() {
			break
		}
	}
	sent := append([]tag(nil), u.held[:n]...)
	u.held = append(u.held[:0], u.held[n:]...)
	return sent
}

// aacRates are AAC's sample rates by sampling_frequency_index.
var aacRates = []int64{96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}

// leak prints the lines of a failed publish to url as ffmpeg 5.1 does at
// -loglevel level+debug.
func leak(url string) {
	_, rest, _ := strings.Cut(url, "://")
	pathQuery := ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		pathQuery = rest[i:]
	}
	app, fname := strings.TrimPrefix(pathQuery, "/"), ""
	if i := strings.LastIndexByte(strings.SplitN(app, "?", 2)[0], '/'); i >= 0 {
		app, fname = app[:i], app[i+1:]
	}
	fmt.Fprintf(os.Stderr, "[debug] Opening an output file: %s.\n", url)
	fmt.Fprintf(os.Stderr, "[rtmp @ 0x5555] [debug] Proto = rtmp, path = %s, app = %s, fname = %s\n", pathQuery, app, fname)
	fmt.Fprintf(os.Stderr, "[rtmp @ 0x5555] [debug] Sending publish command for '%s'\n", fname)
	fmt.Fprintf(os.Stderr, "[info] Output #0, flv, to '%s':\n", url)
	fmt.Fprintf(os.Stderr, "[error] Error writing trailer of %s: Broken pipe\n", url)
	fmt.Fprintf(os.Stderr, "[error] %s: Connection reset by peer\n", url)
}

// mp3FrameUS is the duration of the MPEG audio layer III frame at b's
// start, in microseconds; 0 if b does not start with one.
func mp3FrameUS(b []byte) int64 {
	if len(b) < 4 || b[0] != 0xFF || b[1]&0xE0 != 0xE0 {
		return 0
	}
	rates := map[byte][3]int64{3: {44100, 48000, 32000}, 2: {22050, 24000, 16000}, 0: {11025, 12000, 8000}}
	v, si := (b[1]>>3)&3, (b[2]>>2)&3
	r, ok := rates[v]
	if !ok || si == 3 {
		return 0
	}
	samples := int64(576)
	if v == 3 {
		samples = 1152
	}
	return samples * 1000000 / r[si]
}

// rawBytesPerSecond is the rate of raw input: PCM's (-f s16le -ar R -ac C),
// or 10⁶ for anything else, where a byte counts as a microsecond.
func rawBytesPerSecond(args []string) int64 {
	pcm, rate, channels := false, int64(0), int64(1)
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-f":
			pcm = pcm || args[i+1] == "s16le"
		case "-ar":
			rate, _ = strconv.ParseInt(args[i+1], 10, 64)
		case "-ac":
			channels, _ = strconv.ParseInt(args[i+1], 10, 64)
		}
	}
	if !pcm || rate <= 0 || channels <= 0 {
		return 1e6
	}
	return 2 * rate * channels
}
