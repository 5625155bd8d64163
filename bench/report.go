package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// scenario builds a scenario whose streams last long enough for a steady
// window after the ramp.
func (e env) scenario(client string, chunk time.Duration, codec string, streams int) scenario {
	ramp := max(chunk, time.Duration(streams)*e.rampPer)
	seconds := max(e.seconds, int((ramp+15*time.Second)/time.Second))
	return scenario{client: client, chunk: chunk, codec: codec, format: "mp3", streams: streams, seconds: seconds, ramp: ramp}
}

// pcmSection compares PCM with MP3 sent in 100 ms pieces, both encoded
// to AAC.
func (e env) pcmSection(b *strings.Builder) {
	const n = 10
	var os []*outcome
	for _, client := range []string{"ws", "post", "bare"} {
		for _, format := range []string{"mp3", "pcm"} {
			sc := e.scenario(client, 100*time.Millisecond, "aac", n)
			sc.format = format
			os = append(os, e.mustRun(sc))
		}
	}
	fmt.Fprintf(b, "## PCM against MP3: %d real-time streams per row, 100 ms pieces, 44.1 kHz mono\n\n", n)
	latencyTable(b, os)
	costTable(b, os, nil)
}

func (e env) mustRun(sc scenario) *outcome {
	fmt.Fprintf(os.Stderr, "bench: %s for %d s ...\n", sc, sc.seconds)
	o, err := e.run(sc)
	if err != nil {
		fail(err)
	}
	fmt.Fprintf(os.Stderr, "bench: %s: %s\n", sc, o.summary())
	return o
}

func (e env) latencySection(b *strings.Builder) {
	const n = 20
	var os []*outcome
	for _, sc := range []scenario{
		e.scenario("post", time.Second, "aac", n),
		e.scenario("post", 100*time.Millisecond, "aac", n),
		e.scenario("ws", 100*time.Millisecond, "aac", n),
		e.whipScenario(n),
		e.scenario("raw", 100*time.Millisecond, "aac", n),
		e.scenario("bare", 100*time.Millisecond, "aac", n),
		e.scenario("ws", 100*time.Millisecond, "copy", n),
		e.scenario("bare", 100*time.Millisecond, "copy", n),
	} {
		os = append(os, e.mustRun(sc))
	}
	fmt.Fprintf(b, "## Latency: %d real-time streams per row\n\n", n)
	b.WriteString("\"bare\" is the floor: ffmpeg processes with the publisher's options, fed the same MP3 at the same pace by the bench itself (a persistent pipe into ffmpeg).\n\n")
	latencyTable(b, os)
	b.WriteString("whip: each client sends marker audio (every 100 ms names itself) as 20 ms Opus packets over WebRTC from the moment its connection is up; first audio counts from its offer, as the WebSocket's from its dial.\n\n")
	contentLines(b, os)
	costTable(b, os, nil)
}

// whipScenario is WHIP publishers sending 20 ms Opus, encoded to AAC.
func (e env) whipScenario(streams int) scenario {
	sc := e.scenario("whip", opusFrame, "aac", streams)
	sc.format = "opus"
	return sc
}

func (e env) curveSection(b *strings.Builder, counts []int, png string) {
	var pts []curvePoint
	var pub, bare []*outcome
	for _, n := range counts {
		o := e.mustRun(e.scenario("ws", 100*time.Millisecond, "aac", n))
		f := e.mustRun(e.scenario("bare", 100*time.Millisecond, "aac", n))
		pub, bare = append(pub, o), append(bare, f)
		pts = append(pts, curvePoint{Streams: n, PubCPU: o.pubCPU, FFCPU: o.ffCPU, BareCPU: f.ffCPU,
			PubPSSMiB: float64(o.pubPSS) / 1024, FFPSSMiB: float64(o.ffPSS) / 1024, BarePSSMiB: float64(f.ffPSS) / 1024})
	}
	b.WriteString("## Cost per stream: WebSocket clients sending 100 ms messages, AAC, against bare ffmpeg\n\n")
	costTable(b, pub, bare)
	latencyTable(b, pub)
	if png != "" {
		if err := plotCurve(png, "ffmpeg-publisher: WebSocket 100 ms, AAC 64 kbps mono", pts); err != nil {
			fail(err)
		}
		fmt.Fprintf(b, "![streams against CPU and memory](%s)\n\n", strings.TrimPrefix(png, "bench/"))
	}
}

// holds tells whether the machine held a scenario: every stream published
// once, at least 99% of the audio delivered, and a steady lag under 1 s.
func (o *outcome) holds() bool {
	if o.failures > 0 || len(o.lags) == 0 || pct(o.lags, .99) >= time.Second {
		return false
	}
	for i := range o.delivered {
		if o.delivered[i] < .99 || o.publishes[i] != 1 {
			return false
		}
	}
	return true
}

// capacitySection searches the most streams the machine holds: up from a
// first guess by half again until a run fails (or the bound), then halves
// the interval while it is wider than 5%.
func (e env) capacitySection(b *strings.Builder, client, codec string, guessAndBound []int) {
	guess, bound := guessAndBound[0], guessAndBound[len(guessAndBound)-1]
	lo, hi := 0, 0
	var runs []*outcome
	for n := guess; n > lo && len(runs) < 7; {
		o := e.mustRun(e.scenario(client, 100*time.Millisecond, codec, n))
		runs = append(runs, o)
		if o.holds() {
			lo = n
		} else {
			hi = n
		}
		switch {
		case hi == 0 && n >= bound:
			n = 0 // held at the bound: stop there
		case hi == 0:
			n = min(bound, n*3/2)
		case hi-lo <= max(10, lo/20):
			n = 0
		default:
			n = (lo + hi) / 2
		}
	}
	who := "WebSocket clients sending 100 ms messages"
	if client == "bare" {
		who = "bare ffmpeg processes fed 100 ms at a time (the floor)"
	}
	fmt.Fprintf(b, "## Capacity, %s: %s\n\n", codec, who)
	fmt.Fprintf(b, "Held: every stream published once, ≥ 99%% of its audio recorded by the RTMP server, steady lag p99 under 1 s. **Most streams held: %d**", lo)
	if hi == 0 {
		fmt.Fprintf(b, " (the search's upper bound; not a failure)")
	}
	b.WriteString(".\n\n| streams | held | worst delivered | lag p50 / p99 | publisher + ffmpeg CPU | nginx CPU | bench CPU | failures |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	sort.Slice(runs, func(i, j int) bool { return runs[i].streams < runs[j].streams })
	for _, o := range runs {
		fmt.Fprintf(b, "| %d | %v | %.1f%% | %s / %s | %.0f%% | %.0f%% | %.0f%% | %d %s |\n", o.streams, yes(o.holds()), 100*minOf(o.delivered),
			ms(pct(o.lags, .5)), ms(pct(o.lags, .99)), o.pubCPU+o.ffCPU, o.nginxCPU, o.benchCPU, o.failures, o.firstErr)
	}
	b.WriteString("\nCPU in percent of one core (the machine has " + strconv.Itoa(runtime.NumCPU()) + " cores, shared by the publisher, its ffmpegs, nginx and the bench's clients and players).\n\n")
}

func latencyTable(b *strings.Builder, os []*outcome) {
	b.WriteString("| scenario | POST ack p50 / p99 / max | ack p99 after a stream's first POST | first audio p50 / max | steady lag p50 / p99 | capture to ear p50 / p95 | worst delivered | publishes per stream |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, o := range os {
		acks, later := "-", "-"
		if len(o.acks) > 0 {
			acks = fmt.Sprintf("%s / %s / %s", ms(pct(o.acks, .5)), ms(pct(o.acks, .99)), ms(pct(o.acks, 1)))
			later = ms(pct(o.laterAcks, .99))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s / %s | %s / %s | %s / %s | %.1f%% | %d |\n", o.scenario, acks, later,
			ms(pct(o.firstAudio, .5)), ms(pct(o.firstAudio, 1)), ms(pct(o.lags, .5)), ms(pct(o.lags, .99)),
			ms(o.chunk+pct(o.lags, .5)), ms(o.chunk+pct(o.lags, .95)), 100*minOf(o.delivered), maxOf(o.publishes))
		if o.failures > 0 {
			fmt.Fprintf(b, "| ↳ %d clients failed: %s | | | | | | | |\n", o.failures, o.firstErr)
		}
	}
	b.WriteString("\n")
}

// costTable shows CPU (percent of one core, over the steady window) and
// memory (PSS); bare, when given, holds the floor for each row.
func costTable(b *strings.Builder, os []*outcome, bare []*outcome) {
	b.WriteString("| scenario | publisher CPU | its ffmpegs' CPU | publisher ÷ ffmpegs | bare ffmpegs' CPU | (publisher + ffmpegs) ÷ bare | publisher PSS, per stream beyond idle | ffmpeg PSS per stream | bare ffmpeg PSS per stream | nginx CPU | bench CPU |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for i, o := range os {
		bareCPU, ratio, barePSS := "-", "-", "-"
		if bare != nil {
			f := bare[i]
			bareCPU = fmt.Sprintf("%.1f%%", f.ffCPU)
			ratio = fmt.Sprintf("%.2f", (o.pubCPU+o.ffCPU)/max(f.ffCPU, 0.001))
			barePSS = mib(f.ffPSS / int64(max(1, f.ffProcs)))
		}
		perStream := "-"
		if o.pubPSS > 0 {
			perStream = fmt.Sprintf("%s, %.0f KiB", mib(o.pubPSS), float64(o.pubPSS-o.pubIdlePSS)/float64(o.streams))
		}
		fmt.Fprintf(b, "| %s | %.1f%% | %.1f%% | %.1f%% | %s | %s | %s | %s | %s | %.1f%% | %.1f%% |\n", o.scenario,
			o.pubCPU, o.ffCPU, 100*o.pubCPU/max(o.ffCPU, 0.001), bareCPU, ratio, perStream,
			mib(o.ffPSS/int64(max(1, o.ffProcs))), barePSS, o.nginxCPU, o.benchCPU)
	}
	b.WriteString("\n")
}

func (o *outcome) summary() string {
	return fmt.Sprintf("first audio p50 %s, lag p50 %s p99 %s, worst delivered %.1f%%, CPU publisher %.1f%% ffmpeg %.1f%% nginx %.1f%%, %d failures %s",
		ms(pct(o.firstAudio, .5)), ms(pct(o.lags, .5)), ms(pct(o.lags, .99)), 100*minOf(o.delivered), o.pubCPU, o.ffCPU, o.nginxCPU, o.failures, o.firstErr)
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func minOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxOf(v []int) int {
	m := 0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
func mib(kib int64) string      { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func parseInts(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		fail(fmt.Errorf("no stream counts in %q", s))
	}
	return out
}

func ffmpegVersion() string {
	out, err := exec.Command("ffmpeg", "-version").Output()
	if err != nil {
		return "ffmpeg unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	if f := strings.Fields(line); len(f) >= 3 {
		return "ffmpeg " + f[2]
	}
	return line
}
