package metrics_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"ffmpeg-publisher/admission"
	"ffmpeg-publisher/metrics"
)

// The admission state, its measures and its refusals by reason are
// exported; CPU pressure only where the kernel reports it.
func TestAdmissionMetrics(t *testing.T) {
	m := metrics.New()
	st := admission.Status{
		Saturated: true, Reason: admission.ReasonCPU,
		Last:    admission.Load{Streams: 3, Lag: 1200 * time.Millisecond, Starting: 2, CPU: 71.5},
		Refused: map[string]int64{admission.ReasonCPU: 4, admission.ReasonStarting: 1},
	}
	m.WatchAdmission(func() admission.Status { return st })
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := scrape(t, srv.URL)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"publisher_admission_saturated", nil, 1},
		{"publisher_admission_refused_total", map[string]string{"reason": "cpu"}, 4},
		{"publisher_admission_refused_total", map[string]string{"reason": "starting"}, 1},
		{"publisher_admission_refused_total", map[string]string{"reason": "lag"}, 0},
		{"publisher_admission_stream_lag_seconds", nil, 1.2},
		{"publisher_admission_starting", nil, 2},
		{"publisher_cpu_pressure_percent", nil, 71.5},
	} {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	st = admission.Status{Last: admission.Load{CPU: -1}}
	fams = scrape(t, srv.URL)
	if got := value(t, fams, "publisher_admission_saturated", nil); got != 0 {
		t.Errorf("calm: saturated = %v", got)
	}
	if _, ok := fams["publisher_cpu_pressure_percent"]; ok {
		t.Error("CPU pressure exported without PSI")
	}
}
