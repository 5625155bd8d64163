package metrics

import (
	"ffmpeg-publisher/session"

	"github.com/prometheus/client_golang/prometheus"
)

// WatchWebRTC reports, at each scrape, what the receiver reports of the
// live WHIP publishers say, as aggregates without a label per ID: how many
// there are, the packets they lost and received, and the worst jitter.
// list is the registry's List. Call once.
func (m *Metrics) WatchWebRTC(list func() []session.Info) {
	m.reg.MustRegister(&webrtcCollector{list: list})
}

type webrtcCollector struct{ list func() []session.Info }

var (
	webrtcPublishersDesc = prometheus.NewDesc("publisher_webrtc_publishers",
		"Live streams published over WebRTC (WHIP).", nil, nil)
	webrtcLostDesc = prometheus.NewDesc("publisher_webrtc_packets_lost",
		"RTP packets lost so far by the live WHIP streams (expected by sequence number, never received).", nil, nil)
	webrtcReceivedDesc = prometheus.NewDesc("publisher_webrtc_packets_received",
		"RTP packets received so far by the live WHIP streams.", nil, nil)
	webrtcJitterDesc = prometheus.NewDesc("publisher_webrtc_max_jitter_seconds",
		"The largest RTP interarrival jitter of a live WHIP stream.", nil, nil)
)

func (c *webrtcCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- webrtcPublishersDesc
	ch <- webrtcLostDesc
	ch <- webrtcReceivedDesc
	ch <- webrtcJitterDesc
}

func (c *webrtcCollector) Collect(ch chan<- prometheus.Metric) {
	var n, lost, received, jitter float64
	for _, s := range c.list() {
		if s.WebRTC == nil || s.State == session.StateEnded {
			continue
		}
		n++
		lost += float64(s.WebRTC.PacketsLost)
		received += float64(s.WebRTC.PacketsReceived)
		jitter = max(jitter, s.WebRTC.JitterMS/1000)
	}
	ch <- prometheus.MustNewConstMetric(webrtcPublishersDesc, prometheus.GaugeValue, n)
	ch <- prometheus.MustNewConstMetric(webrtcLostDesc, prometheus.GaugeValue, lost)
	ch <- prometheus.MustNewConstMetric(webrtcReceivedDesc, prometheus.GaugeValue, received)
	ch <- prometheus.MustNewConstMetric(webrtcJitterDesc, prometheus.GaugeValue, jitter)
}
