// Command bench measures ffmpeg-publisher with the real parts: it starts
// nginx-rtmp and the publisher on loopback, drives N legacy POST clients
// at real-time pace, subscribes to every stream over RTMP (an ffmpeg
// subscriber per stream, whose FLV output is timed tag by tag), and writes
// a markdown report: ack latency, time to first audio, steady lag, the
// delivered ratio from the RTMP server's recordings, and the CPU and
// memory (PSS) of the publisher and of its ffmpeg children.
//
//	make build && go run ./bench -streams 20 -seconds 20 -chunk 1s
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
)

func main() {
	bin := flag.String("publisher", "./ffmpeg-publisher", "the publisher binary (make build)")
	streams := flag.Int("streams", 20, "concurrent real-time streams")
	seconds := flag.Int("seconds", 20, "length of each stream")
	chunk := flag.Duration("chunk", time.Second, "audio per POST (1s and 100ms are the usual)")
	codec := flag.String("codec", "aac", "aac, or copy (passthrough; the audio is 44.1 kHz MP3 then)")
	out := flag.String("out", "", "write the report here as well as to stdout")
	flag.Parse()
	r, err := run(*bin, *streams, *seconds, *chunk, *codec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	report := r.markdown(strings.Join(os.Args, " "))
	fmt.Print(report)
	if *out != "" {
		os.MkdirAll(filepath.Dir(*out), 0o755)
		if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

type result struct {
	streams, seconds int
	chunk            time.Duration
	codec            string
	acks             []time.Duration // every POST
	firstAudio       []time.Duration // per stream: first byte sent → first audio tag at a subscriber
	lags             []time.Duration // per audio tag after the first 2 s: arrival − when the client sent it
	delivered        []float64       // per stream: recorded / sent
	pubCPU, ffCPU    float64         // percent of one core, during the steady window
	pubPSS, ffPSS    int64           // kB
	children         int
}

// stream is one client's timeline.
type stream struct {
	id    string
	start time.Time // when chunk 0 was sent
	first time.Time // first audio tag at the subscriber
	tags  []tag
}

type tag struct {
	ts      time.Duration // FLV timestamp
	arrived time.Time
}

func run(bin string, n, seconds int, chunk time.Duration, codec string) (*result, error) {
	dir, err := os.MkdirTemp("", "ffmpeg-publisher-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rtmp, err := rtmptest.Launch(dir)
	if err != nil {
		return nil, err
	}
	defer rtmp.Stop()

	rate, bitrate := 16000, "32k" // what mini-programs send
	if codec == "copy" {
		rate, bitrate = 44100, "64k" // FLV carries MP3 at 44.1 kHz only
	}
	audio, err := rtmptest.GenerateMP3(float64(seconds), rate, 1, bitrate, true)
	if err != nil {
		return nil, err
	}
	chunks := splitFrames(audio, chunk)

	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pub := exec.Command(bin, "-listen", addr, "-rtmp", rtmp.URL, "-key", "bench", "-audio-codec", codec,
		"-rate-requests", "0", "-rate-sessions", "0", "-gap-fill", "0", "-max-sessions", strconv.Itoa(n+10), "-log-level", "warn")
	pub.Stderr = os.Stderr
	if err := pub.Start(); err != nil {
		return nil, fmt.Errorf("start %s (run make build first): %w", bin, err)
	}
	defer func() { pub.Process.Signal(os.Interrupt); pub.Wait() }()
	base := "http://" + addr
	if err := waitHealthy(base); err != nil {
		return nil, err
	}

	r := &result{streams: n, seconds: seconds, chunk: chunk, codec: codec}
	var mu sync.Mutex
	var wg sync.WaitGroup
	all := make([]*stream, n)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for i := 0; i < n; i++ {
		s := &stream{id: fmt.Sprintf("bench%d", i)}
		all[i] = s
		sub, err := subscribe(rtmp.URL+"/"+s.id, s, &mu)
		if err != nil {
			return nil, err
		}
		defer sub.Process.Kill()
	}
	time.Sleep(500 * time.Millisecond) // subscribers connected and waiting
	cpuAt := make(chan [2]float64, 1)
	go func() { // the steady window: every stream live
		time.Sleep(time.Duration(seconds) * time.Second / 4)
		p0, f0 := cpuTicks(pub.Process.Pid)
		t0 := time.Now()
		time.Sleep(time.Duration(seconds) * time.Second / 2)
		p1, f1 := cpuTicks(pub.Process.Pid)
		wall := time.Since(t0).Seconds()
		mu.Lock()
		r.pubPSS, r.ffPSS, r.children = pss(pub.Process.Pid)
		mu.Unlock()
		cpuAt <- [2]float64{100 * (p1 - p0) / clockTicks / wall, 100 * (f1 - f0) / clockTicks / wall}
	}()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(s *stream) {
			defer wg.Done()
			time.Sleep(time.Duration(i) * chunk / time.Duration(n)) // spread arrivals over one chunk
			s.start = time.Now()
			for k, c := range chunks {
				time.Sleep(time.Until(s.start.Add(time.Duration(k) * chunk)))
				q := base + "/base64?key=bench&id=" + s.id
				if k == len(chunks)-1 {
					q += "&end=1"
				}
				t := time.Now()
				resp, err := client.Post(q, "text/plain", strings.NewReader(base64.StdEncoding.EncodeToString(c)))
				took := time.Since(t)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode == 200 {
					mu.Lock()
					r.acks = append(r.acks, took)
					mu.Unlock()
				}
			}
		}(all[i])
	}
	wg.Wait()
	cpu := <-cpuAt
	r.pubCPU, r.ffCPU = cpu[0], cpu[1]
	time.Sleep(2 * time.Second) // the last tags and the recordings settle
	sent := float64(seconds)
	mu.Lock()
	defer mu.Unlock()
	for _, s := range all {
		if !s.first.IsZero() {
			r.firstAudio = append(r.firstAudio, s.first.Sub(s.start))
		}
		for _, tg := range s.tags {
			if tg.ts < 2*time.Second {
				continue
			}
			// The chunk holding this audio was sent at start + its index × chunk.
			sentAt := s.start.Add(tg.ts / chunk * chunk)
			r.lags = append(r.lags, tg.arrived.Sub(sentAt))
		}
		r.delivered = append(r.delivered, rtmp.Measure(s.id).Duration/sent)
	}
	return r, nil
}

// splitFrames cuts bare MP3 into chunks that keep pace with the clock:
// chunk k ends with the frame that ends at or before (k+1)·d, so chunk k
// sent at k·d is real time. (Frames of 44.1 kHz audio vary by one byte of
// padding; a cut that misses a frame boundary by a byte is one the server
// joins anyway.)
func splitFrames(audio []byte, d time.Duration) [][]byte {
	frameLen, frameDur := 144, 36*time.Millisecond // 16 kHz mono 32 kbps
	if len(audio) > 3 && audio[1]&0x18 == 0x18 {   // MPEG-1: 44.1 kHz 64 kbps
		frameLen, frameDur = 209, 26122448*time.Nanosecond
	}
	frames := len(audio) / frameLen
	var out [][]byte
	for k := 0; ; k++ {
		from, to := int(time.Duration(k)*d/frameDur), min(frames, int(time.Duration(k+1)*d/frameDur))
		if from >= frames {
			break
		}
		if k == 0 || to == frames {
			to = max(to, from+1)
		}
		end := to * frameLen
		if to == frames {
			end = len(audio)
		}
		out = append(out, audio[from*frameLen:end])
	}
	return out
}

// subscribe plays url with ffmpeg and times every FLV audio tag it copies
// out. nginx-rtmp lets a player wait for a stream not yet published.
func subscribe(url string, s *stream, mu *sync.Mutex) (*exec.Cmd, error) {
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-fflags", "nobuffer",
		"-probesize", "32", "-analyzeduration", "0", "-i", url, "-c", "copy", "-flush_packets", "1", "-f", "flv", "pipe:1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		br := bufio.NewReader(stdout)
		if _, err := io.CopyN(io.Discard, br, 13); err != nil { // FLV header + first previous-tag size
			return
		}
		hdr := make([]byte, 11)
		for {
			if _, err := io.ReadFull(br, hdr); err != nil {
				return
			}
			now := time.Now()
			size := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
			ts := time.Duration(int(hdr[7])<<24|int(hdr[4])<<16|int(hdr[5])<<8|int(hdr[6])) * time.Millisecond
			if _, err := io.CopyN(io.Discard, br, int64(size)+4); err != nil {
				return
			}
			if hdr[0] == 8 { // audio
				mu.Lock()
				if s.first.IsZero() {
					s.first = now
				}
				s.tags = append(s.tags, tag{ts: ts, arrived: now})
				mu.Unlock()
			}
		}
	}()
	return cmd, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitHealthy(base string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
	}
	return fmt.Errorf("the publisher did not become ready")
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times (100 on
// Linux everywhere that matters).
const clockTicks = 100.0

// cpuTicks returns the CPU time (user + system, in ticks) of pid and, summed,
// of its children.
func cpuTicks(pid int) (self, children float64) {
	self = procTicks(pid)
	for _, c := range childPIDs(pid) {
		children += procTicks(c)
	}
	return self, children
}

func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

func procTicks(pid int) float64 {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64) // utime (field 14 of stat)
	s, _ := strconv.ParseFloat(f[12], 64) // stime
	return u + s
}

func childPIDs(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(n); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// pss returns the proportional set size of pid and of its children, in kB.
func pss(pid int) (self, children int64, count int) {
	self = pssOf(pid)
	for _, c := range childPIDs(pid) {
		children += pssOf(c)
		count++
	}
	return self, children, count
}

func pssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "Pss:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func (r *result) markdown(cmdline string) string {
	var b strings.Builder
	cpuModel := "unknown"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpuModel = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	minDelivered := 1.0
	for _, d := range r.delivered {
		minDelivered = min(minDelivered, d)
	}
	fmt.Fprintf(&b, "## %d streams × %d s, %s POST chunks, %s\n\n", r.streams, r.seconds, r.chunk, r.codec)
	fmt.Fprintf(&b, "- machine: %d cores (%s), %s\n- command: `%s`\n- date: %s\n\n", runtime.NumCPU(), cpuModel, runtime.GOOS+"/"+runtime.GOARCH, cmdline, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "| measure | p50 | p99 | max |\n| --- | --- | --- | --- |\n")
	fmt.Fprintf(&b, "| POST ack latency (%d POSTs) | %s | %s | %s |\n", len(r.acks), ms(pct(r.acks, .5)), ms(pct(r.acks, .99)), ms(pct(r.acks, 1)))
	fmt.Fprintf(&b, "| time to first audio at an RTMP subscriber (%d streams) | %s | %s | %s |\n", len(r.firstAudio), ms(pct(r.firstAudio, .5)), ms(pct(r.firstAudio, .99)), ms(pct(r.firstAudio, 1)))
	fmt.Fprintf(&b, "| steady lag: audio tag arrival − its chunk's POST (%d tags) | %s | %s | %s |\n\n", len(r.lags), ms(pct(r.lags, .5)), ms(pct(r.lags, .99)), ms(pct(r.lags, 1)))
	fmt.Fprintf(&b, "- delivered (recorded ÷ sent), worst stream: %.1f%%\n", 100*minDelivered)
	fmt.Fprintf(&b, "- CPU, steady window: publisher %.1f%% of a core, its %d ffmpeg children %.1f%% (publisher overhead %.1f%% of ffmpeg's)\n",
		r.pubCPU, r.children, r.ffCPU, 100*r.pubCPU/max(r.ffCPU, 0.001))
	fmt.Fprintf(&b, "- memory (PSS): publisher %.1f MiB (%.0f KiB per stream), ffmpeg children %.1f MiB (%.1f MiB per stream)\n\n",
		float64(r.pubPSS)/1024, float64(r.pubPSS)/float64(max(1, r.streams)), float64(r.ffPSS)/1024, float64(r.ffPSS)/1024/float64(max(1, r.children)))
	return b.String()
}
