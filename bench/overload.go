package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"ffmpeg-publisher/internal/rtmpplay"
	"ffmpeg-publisher/internal/rtmptest"

	"github.com/gorilla/websocket"
)

// overload is one admission-control run: WebSocket streams (MP3 encoded to
// AAC) arrive at a fixed rate for a while, each streaming in real time
// until the run ends, against the publisher with admission control on and
// no -max-sessions; with hog, a busy process takes one core from half way.
type overload struct {
	every    time.Duration // between arrivals
	arriving time.Duration // how long streams arrive
	hold     time.Duration // the run goes on this long after the last arrival
	hog      bool
	args     []string // extra publisher flags
}

// overloadOutcome is what a run measured.
type overloadOutcome struct {
	overload
	admitted, refused int
	firstRefusal      time.Duration // since the first arrival; negative: none
	lags              []time.Duration
	firstAudio        []time.Duration // per admitted stream: client's first message → first audio at the subscriber
	windows           []lagWindow
	states            []string // admission state changes seen on /readyz
	signal            []string // the measures, every 5 s
	failures          int
	firstErr          string
}

// lagWindow is the lag of the admitted streams' audio arriving in one
// stretch of the run.
type lagWindow struct {
	from    time.Duration
	streams int
	lags    []time.Duration
}

// overloadSkip: a stream's audio arriving within this of its first (the
// catch-up on what its client sent while its ffmpeg started) is its
// start, reported as first audio, not lag.
const overloadSkip = 2 * time.Second

// lagWindowLen is the stretch of the run one lag row covers.
const lagWindowLen = 10 * time.Second

func (e env) runOverload(ov overload) (*overloadOutcome, error) {
	dir, err := os.MkdirTemp("", "ffmpeg-publisher-overload")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rtmp, err := rtmptest.Launch(dir)
	if err != nil {
		return nil, err
	}
	defer rtmp.Stop()
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pub := exec.Command(e.publisher, append([]string{"-listen", addr, "-rtmp", rtmp.URL, "-key", "bench",
		"-rate-requests", "0", "-rate-sessions", "0", "-gap-fill", "0", "-max-starting", strconv.Itoa(runtime.NumCPU()),
		"-max-sessions", "0", "-log-level", "warn"}, ov.args...)...)
	pub.Stderr = os.Stderr
	if err := pub.Start(); err != nil {
		return nil, fmt.Errorf("start %s (run make build first): %w", e.publisher, err)
	}
	defer func() { pub.Process.Signal(os.Interrupt); pub.Wait() }()
	base := "http://" + addr
	if err := waitHealthy(base); err != nil {
		return nil, err
	}

	total := ov.arriving + ov.hold
	cs := chunks(e.audio, 100*time.Millisecond)
	for len(cs) > 0 && cs[len(cs)-1].to > total {
		cs = cs[:len(cs)-1]
	}
	o := &overloadOutcome{overload: ov, firstRefusal: -1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	begin := time.Now().Add(300 * time.Millisecond)
	end := begin.Add(total)
	windows := make([]lagWindow, int((total+lagWindowLen-1)/lagWindowLen))
	for i := range windows {
		windows[i].from = time.Duration(i) * lagWindowLen
	}
	var mu sync.Mutex // guards o and windows
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	wg.Add(1)
	go func() { defer wg.Done(); o.states, o.signal = watchAdmission(ctx, base, begin) }()
	if ov.hog {
		wg.Add(1)
		go func() { defer wg.Done(); hogCore(ctx, begin.Add(ov.arriving/2), end) }()
	}
	for i := 0; begin.Add(time.Duration(i) * ov.every).Before(begin.Add(ov.arriving)); i++ {
		at := begin.Add(time.Duration(i) * ov.every)
		s := &stream{id: fmt.Sprintf("over%d", i), chunks: cs}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(at))
			subCtx, stopSub := context.WithCancel(ctx)
			defer stopSub()
			played := make(chan struct{})
			go func() {
				defer close(played)
				rtmpplay.Play(subCtx, rtmp.URL+"/"+s.id, func(m rtmpplay.Message) {
					if m.Type != 8 || (m.First>>4 == 10 && m.Second == 0) {
						return
					}
					s.mu.Lock()
					start, first := s.start, s.first
					if first.IsZero() && !start.IsZero() {
						s.first, first = m.Arrived, m.Arrived
						mu.Lock()
						o.firstAudio = append(o.firstAudio, first.Sub(start))
						mu.Unlock()
					}
					s.mu.Unlock()
					if start.IsZero() || m.Arrived.Sub(first) < overloadSkip {
						return
					}
					if sent, ok := s.sentAt(m.TS + time.Second*aacSamples/rate); ok {
						lag := m.Arrived.Sub(sent)
						w := int(m.Arrived.Sub(begin) / lagWindowLen)
						mu.Lock()
						o.lags = append(o.lags, lag)
						if w >= 0 && w < len(windows) {
							windows[w].lags = append(windows[w].lags, lag)
						}
						mu.Unlock()
					}
				})
			}()
			s.mu.Lock()
			s.start = time.Now()
			s.mu.Unlock()
			admitted, err := overloadClient(base, s, end)
			mu.Lock()
			switch {
			case err != nil:
				o.failures++
				if o.firstErr == "" {
					o.firstErr = fmt.Sprintf("%s: %v", s.id, err)
				}
			case admitted:
				o.admitted++
			default:
				o.refused++
				if o.firstRefusal < 0 {
					o.firstRefusal = at.Sub(begin)
				}
			}
			mu.Unlock()
			if !admitted {
				stopSub()
			}
			<-played
		}()
	}
	time.Sleep(time.Until(end.Add(3 * time.Second))) // the last audio on its way
	cancel()
	wg.Wait()
	sort.Slice(o.lags, func(i, j int) bool { return o.lags[i] < o.lags[j] })
	o.windows = windows
	return o, nil
}

// overloadClient streams s over a WebSocket until end, or until the server
// refuses it (close 1013: admitted is false). It returns as soon as it
// knows whether it was admitted, and streams on in the background: the
// first status message with bytes means admitted.
func overloadClient(base string, s *stream, end time.Time) (admitted bool, err error) {
	url := "ws" + strings.TrimPrefix(base, "http") + "/ws?key=bench&id=" + s.id
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		return false, err
	}
	verdict := make(chan error, 1)
	go func() { // status messages: the first with bytes admits, a close 1013 refuses
		decided := false
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				if !decided {
					verdict <- err
				}
				return
			}
			var m struct {
				Type  string
				Bytes int64
			}
			json.Unmarshal(data, &m)
			if !decided && m.Bytes > 0 {
				decided = true
				verdict <- nil
			}
		}
	}()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		defer conn.Close()
		for _, c := range s.chunks {
			time.Sleep(time.Until(s.start.Add(c.from)))
			if time.Now().After(end) || conn.WriteMessage(websocket.BinaryMessage, c.data) != nil {
				break
			}
		}
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	}()
	err = <-verdict
	if err == nil {
		<-sent
		return true, nil
	}
	<-sent
	if websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
		return false, nil
	}
	return false, err
}

// watchAdmission polls /readyz and returns its changes, timed from begin,
// and the measures admission control decides on, every 5 s.
func watchAdmission(ctx context.Context, base string, begin time.Time) (out, signal []string) {
	last := ""
	for n := 0; ; n++ {
		if n%20 == 0 {
			signal = append(signal, fmt.Sprintf("%.0f s: %s", time.Since(begin).Seconds(), admissionGauges(base)))
		}
		state := "ready"
		if resp, err := http.Get(base + "/readyz"); err == nil {
			var r struct{ Status, Reason string }
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if r.Status != "" && r.Status != "ready" {
				state = r.Status + " (" + r.Reason + ")"
			}
		}
		if state != last {
			out = append(out, fmt.Sprintf("%.1f s: %s", time.Since(begin).Seconds(), state))
			last = state
		}
		select {
		case <-ctx.Done():
			return out, signal
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// admissionGauges reads lag p90, starting and CPU pressure from /metrics.
func admissionGauges(base string) string {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	v := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		for _, name := range []string{"publisher_admission_stream_lag_seconds", "publisher_admission_starting", "publisher_cpu_pressure_percent", "publisher_sessions_live"} {
			if rest, ok := strings.CutPrefix(line, name+" "); ok {
				v[name] = rest
			}
		}
	}
	return fmt.Sprintf("%s live, lag %s s, %s starting, PSI %s", v["publisher_sessions_live"], v["publisher_admission_stream_lag_seconds"], v["publisher_admission_starting"], v["publisher_cpu_pressure_percent"])
}

// hogCore runs a busy loop in its own process, taking one core, from at
// until end.
func hogCore(ctx context.Context, at, end time.Time) {
	select {
	case <-time.After(time.Until(at)):
	case <-ctx.Done():
		return
	}
	hog := exec.Command("sh", "-c", "while :; do :; done")
	if hog.Start() != nil {
		return
	}
	select {
	case <-time.After(time.Until(end)):
	case <-ctx.Done():
	}
	hog.Process.Kill()
	hog.Wait()
}

func waitHealthy(base string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
	}
	return fmt.Errorf("the publisher did not come up")
}

// overloadSection runs the arrivals without and with a CPU hog.
func (e env) overloadSection(b *strings.Builder, ov overload) {
	fmt.Fprintf(b, "## Overload: admission control\n\nWebSocket streams (100 ms MP3 messages, encoded to AAC) arrive every %s for %s, each streaming in real time until the run ends %s later; `-max-sessions 0`, admission control at its defaults. First audio: a client's first message to its first audio at an RTMP subscriber (the start, and the catch-up on what the client sent meanwhile, are in it); lag: each admitted stream's audio at the subscriber from %s after its first on, against when its client sent it.\n\n",
		ov.every, ov.arriving, ov.hold, overloadSkip)
	fmt.Fprintln(b, "| run | arrived | admitted | refused | first refusal | first audio p50 / max | lag p50 / p99 / max | lag p99 per 10 s | admission states |")
	fmt.Fprintln(b, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, hog := range []bool{false, true} {
		ov.hog = hog
		o, err := e.runOverload(ov)
		if err != nil {
			fail(err)
		}
		name := "no hog"
		if hog {
			name = fmt.Sprintf("hog on one core from %s", ov.arriving/2)
		}
		var per []string
		for _, w := range o.windows {
			if len(w.lags) > 0 {
				sort.Slice(w.lags, func(i, j int) bool { return w.lags[i] < w.lags[j] })
				per = append(per, fmt.Sprintf("%.0f s: %s", w.from.Seconds(), secs(pct(w.lags, 99))))
			}
		}
		first := "none"
		if o.firstRefusal >= 0 {
			first = fmt.Sprintf("%.1f s", o.firstRefusal.Seconds())
		}
		fmt.Fprintf(b, "| %s | %d | %d | %d | %s | %s / %s | %s / %s / %s | %s | %s |\n", name, o.admitted+o.refused+o.failures, o.admitted, o.refused, first,
			secs(pct(o.firstAudio, .5)), secs(pct(o.firstAudio, 1)),
			secs(pct(o.lags, .5)), secs(pct(o.lags, .99)), secs(pct(o.lags, 1)), strings.Join(per, ", "), strings.Join(o.states, "; "))
		fmt.Fprintf(b, "\n<!-- %s measures: %s -->\n\n", name, strings.Join(o.signal, "; "))
		if o.failures > 0 {
			fmt.Fprintf(b, "\n%d clients failed otherwise; first: %s\n\n", o.failures, o.firstErr)
		}
	}
	fmt.Fprintln(b)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
