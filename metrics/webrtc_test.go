package metrics_test

import (
	"net/http/httptest"
	"testing"

	"ffmpeg-publisher/metrics"
	"ffmpeg-publisher/session"
)

// The WHIP publishers' receiver figures, summed (the worst jitter), one
// series each; streams of other transports count nowhere.
func TestWebRTCAggregates(t *testing.T) {
	m := metrics.New()
	streams := []session.Info{
		{ID: "a", WebRTC: &session.WebRTCStats{PacketsReceived: 500, PacketsLost: 25, JitterMS: 4}},
		{ID: "b", WebRTC: &session.WebRTCStats{PacketsReceived: 100, PacketsLost: 1, JitterMS: 12}},
		{ID: "c"},
	}
	m.WatchWebRTC(func() []session.Info { return streams })
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := scrape(t, srv.URL)
	for name, want := range map[string]float64{
		"publisher_webrtc_publishers":         2,
		"publisher_webrtc_packets_lost":       26,
		"publisher_webrtc_packets_received":   600,
		"publisher_webrtc_max_jitter_seconds": 0.012,
	} {
		if got := value(t, fams, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
		if n := len(fams[name].GetMetric()); n != 1 {
			t.Errorf("%s has %d series, want 1", name, n)
		}
	}
}
