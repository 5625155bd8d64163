package metrics

import (
	"ffmpeg-publisher/session"

	"github.com/prometheus/client_golang/prometheus"
)

// WatchSessions reports, at each scrape, the configured limit of live
// sessions (0: none) and two aggregates over the live streams that alerts
// need without a label per ID: how many have an RTMP server that stopped
// reading, and the largest lag. list is the registry's List. Call once.
func (m *Metrics) WatchSessions(maxSessions int, list func() []session.Info) {
	m.reg.MustRegister(&sessionsCollector{max: float64(maxSessions), list: list})
}

type sessionsCollector struct {
	max  float64
	list func() []session.Info
}

var (
	sessionsMaxDesc = prometheus.NewDesc("publisher_sessions_max",
		"The configured -max-sessions: live sessions allowed at once; 0 means no limit.", nil, nil)
	upstreamStalledDesc = prometheus.NewDesc("publisher_sessions_upstream_stalled",
		"Live sessions whose RTMP server has stopped reading their ffmpeg's connection.", nil, nil)
	maxLagDesc = prometheus.NewDesc("publisher_max_stream_lag_seconds",
		"The largest lag of a live session: audio accepted that no ffmpeg has confirmed sending.", nil, nil)
)

func (c *sessionsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsMaxDesc
	ch <- upstreamStalledDesc
	ch <- maxLagDesc
}

func (c *sessionsCollector) Collect(ch chan<- prometheus.Metric) {
	var stalled, lag float64
	for _, s := range c.list() {
		if s.Upstream != "" {
			stalled++
		}
		lag = max(lag, s.Held)
	}
	ch <- prometheus.MustNewConstMetric(sessionsMaxDesc, prometheus.GaugeValue, c.max)
	ch <- prometheus.MustNewConstMetric(upstreamStalledDesc, prometheus.GaugeValue, stalled)
	ch <- prometheus.MustNewConstMetric(maxLagDesc, prometheus.GaugeValue, lag)
}
