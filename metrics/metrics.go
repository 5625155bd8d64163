// Package metrics exposes the server's Prometheus metrics. It implements
// session.Observer and transport.HTTPObserver, and reads transport's
// limit tables, so neither package depends on Prometheus.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"ffmpeg-publisher/session"
	"ffmpeg-publisher/transport"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds one server's collectors in their own registry.
type Metrics struct {
	reg *prometheus.Registry

	sessionsLive    prometheus.Gauge
	sessionsStarted prometheus.Counter
	sessionsEnded   *prometheus.CounterVec
	bytesIn         *prometheus.CounterVec
	audioIn         *prometheus.CounterVec
	ffmpegStarts    prometheus.Counter
	ffmpegRestarts  prometheus.Counter
	buffered        prometheus.Gauge
	dropped         *prometheus.CounterVec
	ffmpegExits     *prometheus.CounterVec
	responses       *prometheus.CounterVec
	ackLatency      prometheus.Histogram
	stdinWrite      prometheus.Histogram
	outputs         outputMetrics
	hookCalls       *prometheus.CounterVec
	hookFailures    *prometheus.CounterVec
	hookLatency     *prometheus.HistogramVec
	hookDropped     *prometheus.CounterVec
}

// latencyBuckets: 100 µs to about 3 s, doubling.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 15)

// New registers every metric, plus the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		sessionsLive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "publisher_sessions_live", Help: "Live sessions (one ffmpeg each once audio arrived).",
		}),
		sessionsStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "publisher_sessions_started_total", Help: "Sessions started.",
		}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_sessions_ended_total", Help: "Sessions ended, by cause (idle, client, deleted, ffmpeg_failed, not_mp3, shutdown).",
		}, []string{"cause"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_received_bytes_total", Help: "MP3 bytes accepted, by transport (base64, websocket, upload).",
		}, []string{"transport"}),
		audioIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_received_audio_seconds_total", Help: "Seconds of audio accepted, by transport.",
		}, []string{"transport"}),
		ffmpegStarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "publisher_ffmpeg_starts_total", Help: "ffmpeg processes started.",
		}),
		ffmpegRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "publisher_ffmpeg_restarts_total", Help: "ffmpeg processes restarted after a failure (RTMP server down, stall, crash).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_dropped_bytes_total", Help: "Accepted audio bytes given up, by cause: upstream (the RTMP server stayed away through a stream's end), shutdown (the grace ran out), never_published.",
		}, []string{"cause"}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "publisher_buffered_bytes", Help: "Accepted audio bytes no ffmpeg has confirmed sending yet, over all sessions.",
		}),
		ffmpegExits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_ffmpeg_exits_total", Help: "ffmpeg processes ended, by cause (clean, error, killed).",
		}, []string{"cause"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_http_responses_total", Help: "HTTP responses, by route and status code.",
		}, []string{"route", "code"}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "publisher_ack_latency_seconds", Help: "Time to acknowledge a successful /base64 POST.",
			Buckets: latencyBuckets,
		}),
		stdinWrite: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "publisher_stdin_write_seconds", Help: "Time to write one chunk into ffmpeg's stdin.",
			Buckets: latencyBuckets,
		}),
		hookCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_hook_calls_total", Help: "Calls to the HTTP hooks, by hook (on_publish, on_update, on_done), retries included.",
		}, []string{"hook"}),
		hookFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_hook_failures_total", Help: "Hook calls that got no answer (timeout, unreachable) or a 5xx, by hook.",
		}, []string{"hook"}),
		hookLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "publisher_hook_latency_seconds", Help: "Time from a hook call to its answer (or its failure), by hook.",
			Buckets: latencyBuckets,
		}, []string{"hook"}),
		hookDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_hook_dropped_total", Help: "Notifications given up, by hook and cause (overflow: the queue was full; expired: retried too long; shutdown).",
		}, []string{"hook", "cause"}),
	}
	m.reg.MustRegister(m.hookCalls, m.hookFailures, m.hookLatency, m.hookDropped)
	m.reg.MustRegister(m.sessionsLive, m.sessionsStarted, m.sessionsEnded, m.bytesIn, m.audioIn,
		m.ffmpegStarts, m.ffmpegRestarts, m.buffered, m.dropped, m.ffmpegExits, m.responses, m.ackLatency, m.stdinWrite,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.outputs = newOutputMetrics(m.reg)
	// Known label values start at zero, so rate() and alerts work before
	// the first event.
	for _, c := range []session.Cause{session.CauseIdle, session.CauseClient, session.CauseDeleted,
		session.CauseFFmpeg, session.CauseNotMP3, session.CauseShutdown, session.CauseRevoked} {
		m.sessionsEnded.WithLabelValues(string(c))
	}
	for _, t := range []string{"base64", "websocket", "upload"} {
		m.bytesIn.WithLabelValues(t)
		m.audioIn.WithLabelValues(t)
	}
	for _, c := range []string{"clean", "error", "killed"} {
		m.ffmpegExits.WithLabelValues(c)
	}
	for _, c := range []string{session.DropUpstream, session.DropShutdown, session.DropNeverPublished} {
		m.dropped.WithLabelValues(c)
	}
	for _, h := range []string{"on_publish", "on_update", "on_done"} {
		m.hookCalls.WithLabelValues(h)
		m.hookFailures.WithLabelValues(h)
	}
	return m
}

// WatchLimits reports the per-client rate limit tables at each scrape:
// how many clients they hold, and how many were evicted to keep them
// within their bound (many evictions: a flood of addresses). Call once.
func (m *Metrics) WatchLimits(stats func() []transport.LimitStats) {
	m.reg.MustRegister(limitCollector(stats))
}

type limitCollector func() []transport.LimitStats

var (
	limitClientsDesc = prometheus.NewDesc("publisher_rate_limit_clients",
		"Clients with a rate limit bucket, by limit (requests, sessions).", []string{"limit"}, nil)
	limitEvictionsDesc = prometheus.NewDesc("publisher_rate_limit_evictions_total",
		"Rate limit buckets forgotten to keep the table within its bound, by limit.", []string{"limit"}, nil)
)

func (c limitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- limitClientsDesc
	ch <- limitEvictionsDesc
}

func (c limitCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c() {
		ch <- prometheus.MustNewConstMetric(limitClientsDesc, prometheus.GaugeValue, float64(l.Clients), l.Limit)
		ch <- prometheus.MustNewConstMetric(limitEvictionsDesc, prometheus.CounterValue, float64(l.Evicted), l.Limit)
	}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// session.Observer

func (m *Metrics) SessionStarted() { m.sessionsLive.Inc(); m.sessionsStarted.Inc() }

func (m *Metrics) SessionEnded(c session.Cause) {
	m.sessionsLive.Dec()
	m.sessionsEnded.WithLabelValues(string(c)).Inc()
}

func (m *Metrics) FFmpegStarted()               { m.ffmpegStarts.Inc() }
func (m *Metrics) FFmpegRestarted()             { m.ffmpegRestarts.Inc() }
func (m *Metrics) Buffered(delta int)           { m.buffered.Add(float64(delta)) }
func (m *Metrics) Dropped(cause string, n int)  { m.dropped.WithLabelValues(cause).Add(float64(n)) }
func (m *Metrics) FFmpegExited(cause string)    { m.ffmpegExits.WithLabelValues(cause).Inc() }
func (m *Metrics) StdinWritten(d time.Duration) { m.stdinWrite.Observe(d.Seconds()) }

func (m *Metrics) Accepted(transport string, bytes int, audio time.Duration) {
	m.bytesIn.WithLabelValues(transport).Add(float64(bytes))
	m.audioIn.WithLabelValues(transport).Add(audio.Seconds())
}

// hooks.Observer

func (m *Metrics) HookCalled(hook string, took time.Duration, answered bool) {
	m.hookCalls.WithLabelValues(hook).Inc()
	if !answered {
		m.hookFailures.WithLabelValues(hook).Inc()
	}
	m.hookLatency.WithLabelValues(hook).Observe(took.Seconds())
}

func (m *Metrics) HookDropped(hook, cause string) { m.hookDropped.WithLabelValues(hook, cause).Inc() }

// transport.HTTPObserver

func (m *Metrics) Replied(pattern string, code int, took time.Duration) {
	if pattern == "" {
		pattern = "unmatched"
	}
	m.responses.WithLabelValues(pattern, strconv.Itoa(code)).Inc()
	if pattern == "/base64" && code == http.StatusOK {
		m.ackLatency.Observe(took.Seconds())
	}
}
