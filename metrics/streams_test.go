package metrics_test

import (
	"net/http/httptest"
	"testing"

	"ffmpeg-publisher/metrics"
	"ffmpeg-publisher/session"
)

// The aggregates over live streams carry no per-ID label: the limit, the
// streams whose RTMP server stopped reading, the largest lag.
func TestSessionAggregates(t *testing.T) {
	m := metrics.New()
	streams := []session.Info{
		{ID: "a", Held: 0.4},
		{ID: "b", Held: 7.5, Upstream: "not answering"},
		{ID: "c", Held: 1.2},
	}
	m.WatchSessions(150, func() []session.Info { return streams })
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := scrape(t, srv.URL)
	for name, want := range map[string]float64{
		"publisher_sessions_max":              150,
		"publisher_sessions_upstream_stalled": 1,
		"publisher_max_stream_lag_seconds":    7.5,
	} {
		if got := value(t, fams, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
		if n := len(fams[name].GetMetric()); n != 1 {
			t.Errorf("%s has %d series, want 1", name, n)
		}
	}
	streams = nil
	fams = scrape(t, srv.URL)
	if got := value(t, fams, "publisher_max_stream_lag_seconds", nil); got != 0 {
		t.Errorf("no streams: lag %v, want 0", got)
	}
}
