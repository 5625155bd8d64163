// Command bench measures ffmpeg-publisher with the real parts: it starts
// nginx-rtmp and the publisher on loopback, drives N clients at real-time
// pace (legacy base64 POSTs, WebSocket messages or one streamed upload
// each), subscribes to every stream over RTMP, and writes a markdown
// report: POST ack latency, time to first audio, steady lag, the audio
// delivered per stream (from the RTMP server's recordings), the CPU and
// memory (PSS) of the publisher and its ffmpeg children against bare
// ffmpeg processes fed the same audio, how that grows with the number of
// streams, and how many streams the machine holds.
//
//	make bench                                      # the whole report
//	go run ./bench -mode run -client ws -streams 50 # one scenario
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

func main() {
	fakeffmpeg.Main() // -fake-ffmpeg: the publisher runs this binary as its ffmpeg
	mode := flag.String("mode", "report", "report (every section below) or run (one scenario)")
	sections := flag.String("sections", "latency,curve,capacity,capacity-bare,pcm,overload", "report sections: start (an ffmpeg start step by step), latency, curve, capacity (WebSocket clients), capacity-bare (bare ffmpeg), pcm (PCM against MP3), overload (admission control, without and with a CPU hog), quality (CPU against listening quality per encoding, offline), input (ffmpeg's CPU reading FLV tags against raw MP3, side by side)")
	bin := flag.String("publisher", "./ffmpeg-publisher", "the publisher binary (make build)")
	client := flag.String("client", "ws", "run: post, ws, raw, whip (20 ms Opus over WebRTC), or bare (ffmpeg fed directly, the floor)")
	chunkDur := flag.Duration("chunk", 100*time.Millisecond, "run: audio per POST or message")
	codec := flag.String("codec", "aac", "run: aac, or copy (MP3 passed through)")
	format := flag.String("format", "mp3", "run: the clients' audio, mp3, pcm (44.1 kHz mono s16le) or aac (ADTS, published as it is)")
	streams := flag.Int("streams", 20, "run: concurrent real-time streams")
	seconds := flag.Int("seconds", 20, "length of each stream (longer when the ramp needs it)")
	rampPer := flag.Duration("ramp-per-stream", 250*time.Millisecond, "stream starts are spread this far apart: an ffmpeg start costs 100-200 ms of CPU (up to ~0.9 s with 100 streams running here), and closer starts measure the ramp rather than the streams")
	curve := flag.String("curve", "25,50,100,150", "report: stream counts of the cost curve")
	capAAC := flag.String("capacity-aac", "90,250", "report: AAC capacity search, first guess and upper bound")
	capCopy := flag.String("capacity-copy", "250,1000", "report: passthrough capacity search, first guess and upper bound")
	ovEvery := flag.Duration("overload-every", 500*time.Millisecond, "overload: time between stream arrivals")
	ovFor := flag.Duration("overload-for", 60*time.Second, "overload: how long streams arrive (the hog starts half way)")
	ovHold := flag.Duration("overload-hold", 15*time.Second, "overload: how long the run goes on after the last arrival")
	ovArgs := flag.String("overload-args", "", "overload: extra publisher flags, space-separated (-admit-cpu 80)")
	out := flag.String("out", "bench/REPORT.md", "report: write it here (and to stdout)")
	png := flag.String("png", "bench/curve.png", "report: the cost curve plot")
	lead := flag.Duration("connect-lead", 0, "ws and raw clients connect this long before their first chunk leaves (a live client connects as capture starts; its first 100 ms frame is ready 100 ms later): the time a prestarted ffmpeg has to load")
	fake := flag.Bool("fake-ffmpeg", false, "run: the publisher's ffmpegs are stand-ins that read and discard their input and report progress every 0.5 s, so the publisher's own cost is measured without ffmpeg's beside it (no audio reaches the RTMP server)")
	flag.Parse()

	// Audio for the longest scenario: the largest stream count's ramp and
	// its steady window.
	most := *streams
	for _, l := range []string{*curve, *capAAC, *capCopy} {
		most = max(most, slices.Max(parseInts(l)))
	}
	audioLen := max(*seconds, int((time.Duration(most)**rampPer+20*time.Second)/time.Second), int((*ovFor+*ovHold)/time.Second)+1)
	audio, err := makeAudio(audioLen)
	if err != nil {
		fail(err)
	}
	var pcm []byte
	if *format == "pcm" || strings.Contains(*sections, "pcm") {
		if pcm, err = makePCM(audioLen); err != nil {
			fail(err)
		}
	}
	var adts []byte
	if *format == "aac" {
		if adts, err = makeADTS(audioLen); err != nil {
			fail(err)
		}
	}
	var opus [][]byte
	if *client == "whip" || strings.Contains(*sections, "latency") {
		if opus, err = makeOpus(min(audioLen, 70)); err != nil {
			fail(err)
		}
	}
	e := env{publisher: *bin, audio: audio, pcm: pcm, adts: adts, opus: opus, rampPer: *rampPer, seconds: *seconds, lead: *lead, fake: *fake,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4096}}}
	cmdline := "go run ./bench " + strings.Join(os.Args[1:], " ")
	var b strings.Builder
	fmt.Fprintf(&b, "# ffmpeg-publisher benchmark\n\n- machine: %d cores (%s), %s, %s\n- command: `%s`\n- date: %s\n\n",
		runtime.NumCPU(), cpuModel(), runtime.GOOS+"/"+runtime.GOARCH, ffmpegVersion(), cmdline, time.Now().UTC().Format(time.RFC3339))
	if *mode == "run" {
		sc := e.scenario(*client, *chunkDur, *codec, *streams)
		sc.format = *format
		if sc.client == "whip" {
			sc.chunk, sc.format = opusFrame, "opus"
		}
		o, err := e.run(sc)
		if err != nil {
			fail(err)
		}
		latencyTable(&b, []*outcome{o})
		contentLines(&b, []*outcome{o})
		costTable(&b, []*outcome{o}, nil)
		fmt.Print(b.String())
		return
	}
	printed := 0
	for _, sec := range strings.Split(*sections, ",") {
		switch sec {
		case "latency":
			e.latencySection(&b)
		case "pcm":
			e.pcmSection(&b)
		case "overload":
			e.overloadSection(&b, overload{every: *ovEvery, arriving: *ovFor, hold: *ovHold, args: strings.Fields(*ovArgs)})
		case "start":
			e.startSection(&b, 15, max(*lead, 100*time.Millisecond))
		case "quality":
			e.qualitySection(&b)
		case "input":
			e.inputSection(&b, 16, 3)
		case "curve":
			e.curveSection(&b, parseInts(*curve), *png)
		case "capacity", "capacity-bare":
			client := "ws"
			if sec == "capacity-bare" {
				client = "bare"
			}
			e.capacitySection(&b, client, "aac", parseInts(*capAAC))
			e.capacitySection(&b, client, "copy", parseInts(*capCopy))
		default:
			fail(fmt.Errorf("unknown section %q", sec))
		}
		fmt.Fprint(os.Stderr, b.String()[printed:]) // in case a later section fails
		printed = b.Len()
	}
	if *out != "" {
		os.MkdirAll(filepath.Dir(*out), 0o755)
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
