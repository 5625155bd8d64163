package metrics

import (
	"strconv"

	"ffmpeg-publisher/session"

	"github.com/prometheus/client_golang/prometheus"
)

// outputMetrics counts restreams' failures and returns, labelled by the
// output's index in a stream's list (a URL may hold a key).
type outputMetrics struct {
	failures   *prometheus.CounterVec
	recoveries *prometheus.CounterVec
	stalls     *prometheus.CounterVec
}

func newOutputMetrics(reg *prometheus.Registry) outputMetrics {
	o := outputMetrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_output_failures_total", Help: "Restreams (outputs after the first) that failed while the stream went on to the others, by output index.",
		}, []string{"output"}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_output_recoveries_total", Help: "Failed restreams that ffmpeg reopened, by output index.",
		}, []string{"output"}),
		stalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "publisher_output_stalls_total", Help: "Restreams whose server stopped taking the stream while it stayed connected, by output index.",
		}, []string{"output"}),
	}
	reg.MustRegister(o.failures, o.recoveries, o.stalls)
	return o
}

// session.OutputObserver

func (m *Metrics) OutputDown(index int) {
	m.outputs.failures.WithLabelValues(strconv.Itoa(index)).Inc()
}

func (m *Metrics) OutputRecovered(index int) {
	m.outputs.recoveries.WithLabelValues(strconv.Itoa(index)).Inc()
}

func (m *Metrics) OutputStalled(index int) {
	m.outputs.stalls.WithLabelValues(strconv.Itoa(index)).Inc()
}

var (
	_ session.OutputObserver      = (*Metrics)(nil)
	_ session.OutputStallObserver = (*Metrics)(nil)
)
