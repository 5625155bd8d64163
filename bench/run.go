package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/internal/markers"
	"ffmpeg-publisher/internal/rtmpplay"
	"ffmpeg-publisher/internal/rtmptest"
)

// scenario is one measured run: N clients of one kind streaming in real
// time for seconds each, their starts spread over ramp.
type scenario struct {
	client  string // post, ws, raw, whip (through the publisher) or bare (ffmpeg fed directly)
	chunk   time.Duration
	codec   string // aac or copy
	format  string // of the client's audio: mp3, pcm (44.1 kHz mono), aac, or opus (whip)
	streams int
	seconds int
	ramp    time.Duration
}

func (s scenario) String() string {
	switch s.format {
	case "pcm":
		return fmt.Sprintf("%d × %s %s PCM, %s", s.streams, s.client, s.chunk, s.codec)
	case "aac":
		return fmt.Sprintf("%d × %s %s AAC in, copied", s.streams, s.client, s.chunk)
	case "opus":
		return fmt.Sprintf("%d × %s %s Opus, %s", s.streams, s.client, s.chunk, s.codec)
	}
	return fmt.Sprintf("%d × %s %s, %s", s.streams, s.client, s.chunk, s.codec)
}

// outcome is what a scenario measured.
type outcome struct {
	scenario
	acks       []time.Duration // every POST (post only)
	laterAcks  []time.Duration // every POST but each stream's first, which waits for the publish to open
	firstAudio []time.Duration // per stream: first byte sent → first audio tag at a subscriber
	lags       []time.Duration // per audio tag in the steady window: arrival − when the client sent its audio
	delivered  []float64       // per stream: recorded ÷ sent
	publishes  []int           // per stream: publish sessions at the RTMP server
	ears       []time.Duration // whip: per marker, capture to ear found by content
	unheard    int             // whip: markers sent but in no recording
	connects   []time.Duration // whip: per stream, offer → connection up
	failures   int             // clients that got an error
	firstErr   string
	window     float64 // seconds of the steady window
	// CPU in percent of one core over the steady window; memory (PSS) in
	// KiB in its middle.
	pubCPU, ffCPU, nginxCPU, benchCPU float64
	pubPSS, pubIdlePSS, ffPSS         int64
	ffProcs                           int
}

// stream is one client's timeline.
type stream struct {
	id     string
	query  string // the format's parameters, for the publisher's URLs
	chunks []chunk
	start  time.Time // when its first byte was sent (whip: when it connects)

	mu    sync.Mutex
	sent0 time.Time // whip: its first packet, after the connection is up
	first time.Time // first audio tag at the subscriber
	lags  []time.Duration
	heard []heard // whip: every audio message, to place the markers
}

// sentAt is when the client sent the chunk holding the audio up to end.
func (s *stream) sentAt(end time.Duration) (time.Time, bool) {
	i := sort.Search(len(s.chunks), func(i int) bool { return s.chunks[i].to >= end })
	if i == len(s.chunks) {
		return time.Time{}, false
	}
	t0 := s.start
	if !s.sent0.IsZero() {
		t0 = s.sent0
	}
	return t0.Add(s.chunks[i].from), true
}

// env is what a scenario runs against.
type env struct {
	publisher string // binary
	audio     []byte
	pcm       []byte        // the same signal as PCM; nil when no scenario needs it
	adts      []byte        // the same signal as AAC in ADTS; nil when no scenario needs it
	opus      [][]byte      // marker audio as 20 ms Opus packets (whip); nil when no scenario needs it
	rampPer   time.Duration // between stream starts
	seconds   int           // the shortest stream
	http      *http.Client
	// lead: ws and raw clients connect this long before their first
	// chunk leaves, as a live client opens its connection when capture
	// starts and has its first frame a frame later; 0: just before.
	lead time.Duration
	// fake: the publisher's ffmpegs are fakeffmpeg.Paced stand-ins (this
	// binary), for the publisher's own cost alone.
	fake bool
}

func (e env) run(sc scenario) (*outcome, error) {
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

	need := time.Duration(sc.seconds) * time.Second
	audio := e.audio
	cs := chunks(audio, sc.chunk)
	query := ""
	switch sc.format {
	case "pcm":
		cs, query = pcmChunks(e.pcm, sc.chunk), pcmQuery
	case "aac":
		cs, query = adtsChunks(e.adts, sc.chunk), "&format=aac"
	case "opus":
		cs = opusChunks(e.opus)
	}
	for len(cs) > 0 && cs[len(cs)-1].to > need {
		cs = cs[:len(cs)-1]
	}
	sent := cs[len(cs)-1].to

	o := &outcome{scenario: sc}
	var pub *exec.Cmd
	base := ""
	if sc.client != "bare" {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		pub = exec.Command(e.publisher, "-listen", addr, "-rtmp", rtmp.URL, "-key", "bench", "-audio-codec", sc.codec,
			"-rate-requests", "0", "-rate-sessions", "0", "-gap-fill", "0", "-max-starting", strconv.Itoa(runtime.NumCPU()), "-max-sessions", strconv.Itoa(sc.streams+10),
			"-admit-lag", "0", "-admit-starting", "0", "-admit-cpu", "0", // the raw capacity; the overload section measures admission
			"-log-level", "warn")
		if sc.client == "whip" {
			pub.Args = append(pub.Args, "-webrtc-udp", "127.0.0.1:0")
		}
		if e.fake {
			exe, err := os.Executable()
			if err != nil {
				return nil, err
			}
			pub.Args = append(pub.Args, "-ffmpeg", exe)
			pub.Env = append(os.Environ(), fakeffmpeg.Env(dir, fakeffmpeg.Paced)...)
		}
		pub.Stderr = os.Stderr
		if err := pub.Start(); err != nil {
			return nil, fmt.Errorf("start %s (run make build first): %w", e.publisher, err)
		}
		defer func() { pub.Process.Signal(os.Interrupt); pub.Wait() }()
		base = "http://" + addr
		if err := waitReady(base); err != nil {
			return nil, err
		}
		o.pubIdlePSS = pssKiB(pub.Process.Pid)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var subs sync.WaitGroup
	defer subs.Wait()
	defer cancel()
	all := make([]*stream, sc.streams)
	// Players connect first and wait for their streams.
	begin := time.Now().Add(300 * time.Millisecond)
	// The steady window: every stream started (and its first seconds,
	// ffmpeg's start and any backlog it caught up on, behind it) until the
	// first streams near their end.
	ts0 := begin.Add(sc.ramp + 5*time.Second)
	ts1 := begin.Add(sent - time.Second)
	if !ts1.After(ts0.Add(2 * time.Second)) {
		return nil, fmt.Errorf("%s: %d s streams leave no steady window after a %s ramp", sc, sc.seconds, sc.ramp)
	}
	outRate := rate
	if sc.format == "opus" {
		outRate = 48000 // ffmpeg encodes at its input's rate
	}
	tagDur := time.Second * aacSamples / time.Duration(outRate)
	if sc.codec == "copy" && sc.format == "mp3" {
		tagDur = time.Second * mp3Samples / rate
	}
	for i := range all {
		s := &stream{id: fmt.Sprintf("bench%d", i), query: query, chunks: cs}
		all[i] = s
		subs.Add(1)
		go func() {
			defer subs.Done()
			rtmpplay.Play(ctx, rtmp.URL+"/"+s.id, func(m rtmpplay.Message) {
				if m.Type != 8 || (m.First>>4 == 10 && m.Second == 0) { // not audio, or an AAC sequence header
					return
				}
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.first.IsZero() {
					s.first = m.Arrived
				}
				if sc.format == "opus" {
					s.heard = append(s.heard, heard{m.TS, m.Arrived})
				}
				if m.Arrived.Before(ts0) || s.start.IsZero() {
					return
				}
				if at, ok := s.sentAt(m.TS + tagDur); ok {
					s.lags = append(s.lags, m.Arrived.Sub(at))
				}
			})
		}()
	}
	time.Sleep(time.Until(begin))
	bench := os.Getpid()
	var sample sync.WaitGroup
	sample.Add(1)
	go func() {
		defer sample.Done()
		time.Sleep(time.Until(ts0))
		pubPID := 0
		if pub != nil {
			pubPID = pub.Process.Pid
		}
		ffPIDs := e.ffmpegPIDs(pubPID)
		nginx := append(childPIDs(rtmp.PID()), rtmp.PID())
		watched := append(append([]int{pubPID, bench}, nginx...), ffPIDs...)
		c0 := cpuOf(watched)
		t0 := time.Now()
		time.Sleep(time.Until(ts0.Add(ts1.Sub(ts0) / 2)))
		if pubPID != 0 {
			o.pubPSS = pssKiB(pubPID)
		}
		o.ffProcs = len(ffPIDs)
		o.ffPSS = pssSum(ffPIDs)
		time.Sleep(time.Until(ts1))
		c1 := cpuOf(watched)
		o.window = time.Since(t0).Seconds()
		pct := func(pids ...int) float64 {
			b, a := map[int]float64{}, map[int]float64{}
			for _, p := range pids {
				b[p], a[p] = c0[p], c1[p]
			}
			return 100 * cpuDelta(b, a) / o.window
		}
		if pubPID != 0 {
			o.pubCPU = pct(pubPID)
		}
		o.ffCPU = pct(ffPIDs...)
		o.nginxCPU = pct(nginx...)
		o.benchCPU = pct(bench) // its ffmpeg children (bare) count only once reaped
	}()

	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		o.failures++
		if o.firstErr == "" {
			o.firstErr = err.Error()
		}
	}
	var clients sync.WaitGroup
	for i, s := range all {
		clients.Add(1)
		go func() {
			defer clients.Done()
			time.Sleep(time.Until(begin.Add(time.Duration(i) * sc.ramp / time.Duration(sc.streams))))
			s.mu.Lock()
			s.start = time.Now()
			if sc.client == "ws" || sc.client == "raw" {
				s.start = s.start.Add(e.lead) // the client connects now; its first byte leaves then
			}
			s.mu.Unlock()
			var err error
			switch sc.client {
			case "post":
				var acks []time.Duration
				acks, err = postClient(e.http, base, s)
				mu.Lock()
				o.acks = append(o.acks, acks...)
				if len(acks) > 1 {
					o.laterAcks = append(o.laterAcks, acks[1:]...)
				}
				mu.Unlock()
			case "ws":
				err = wsClient(base, s)
			case "raw":
				err = rawClient(e.http, base, s)
			case "whip":
				err = whipClient(base, s)
			case "bare":
				err = bareClient(rtmp.URL+"/"+s.id, sc.codec, sc.format, s)
			default:
				err = fmt.Errorf("unknown client %q", sc.client)
			}
			if err != nil {
				fail(fmt.Errorf("%s: %w", s.id, err))
			}
		}()
	}
	clients.Wait()
	sample.Wait()
	// The last tags, and the recordings: wait until they stop growing.
	for prev, deadline := int64(-1), time.Now().Add(10*time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if n := dirBytes(rtmp.RecDir); n == prev {
			break
		} else {
			prev = n
		}
	}
	cancel()
	subs.Wait()
	published := rtmp.PublishCounts()
	for _, s := range all {
		s.mu.Lock()
		if !s.first.IsZero() {
			o.firstAudio = append(o.firstAudio, s.first.Sub(s.start))
		}
		o.lags = append(o.lags, s.lags...)
		s.mu.Unlock()
		o.delivered = append(o.delivered, recordedAudio(rtmp.Recordings(s.id), outRate).Seconds()/sent.Seconds())
		o.publishes = append(o.publishes, published[s.id])
		if !s.sent0.IsZero() {
			o.connects = append(o.connects, s.sent0.Sub(s.start))
		}
		if sc.format == "opus" && published[s.id] == 1 {
			ears, unheard, err := earByContent(rtmp.Recordings(s.id), s.heard, tagDur, s.sent0, ts0, markers.Markers(sent))
			if err != nil {
				return nil, err
			}
			o.ears = append(o.ears, ears...)
			o.unheard += unheard
		}
	}
	return o, nil
}

// ffmpegPIDs lists the ffmpeg processes publishing: the publisher's
// children, or for bare streams the bench's own ffmpeg children.
func (e env) ffmpegPIDs(pub int) []int {
	parent := pub
	if parent == 0 {
		parent = os.Getpid()
	}
	var out []int
	for _, p := range childPIDs(parent) {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); strings.TrimSpace(string(comm)) == "ffmpeg" {
			out = append(out, p)
		}
	}
	return out
}

func dirBytes(dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitReady(base string) error {
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
