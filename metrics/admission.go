package metrics

import (
	"ffmpeg-publisher/admission"

	"github.com/prometheus/client_golang/prometheus"
)

// WatchAdmission reports, at each scrape, the admission state, the
// measures it decides on and the new streams it refused. status is the
// controller's Status. Call once.
func (m *Metrics) WatchAdmission(status func() admission.Status) {
	m.reg.MustRegister(&admissionCollector{status: status})
}

type admissionCollector struct{ status func() admission.Status }

var (
	admissionSaturatedDesc = prometheus.NewDesc("publisher_admission_saturated",
		"1 while the server refuses new streams to keep its live ones on pace (/readyz says why), 0 otherwise.", nil, nil)
	admissionRefusedDesc = prometheus.NewDesc("publisher_admission_refused_total",
		"New streams refused by admission control, by reason (lag, starting, cpu, memory).", []string{"reason"}, nil)
	admissionLagDesc = prometheus.NewDesc("publisher_admission_stream_lag_seconds",
		"The 90th percentile of the publishing streams' lag, as admission control last measured it.", nil, nil)
	admissionStartingDesc = prometheus.NewDesc("publisher_admission_starting",
		"Streams whose ffmpeg has not published yet, as admission control last counted them.", nil, nil)
	cpuPressureDesc = prometheus.NewDesc("publisher_cpu_pressure_percent",
		"Share of time some runnable task waited for a CPU over 10 s (PSI some avg10); absent where the kernel does not say.", nil, nil)
	memoryAvailableDesc = prometheus.NewDesc("publisher_memory_available_bytes",
		"Memory new streams could still use (MemAvailable, or the cgroup's limit if nearer), as admission control last read it; absent when unknown.", nil, nil)
)

func (c *admissionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{admissionSaturatedDesc, admissionRefusedDesc, admissionLagDesc, admissionStartingDesc, cpuPressureDesc, memoryAvailableDesc} {
		ch <- d
	}
}

func (c *admissionCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	sat := 0.0
	if st.Saturated {
		sat = 1
	}
	ch <- prometheus.MustNewConstMetric(admissionSaturatedDesc, prometheus.GaugeValue, sat)
	for _, why := range admission.Reasons() {
		ch <- prometheus.MustNewConstMetric(admissionRefusedDesc, prometheus.CounterValue, float64(st.Refused[why]), why)
	}
	ch <- prometheus.MustNewConstMetric(admissionLagDesc, prometheus.GaugeValue, st.Last.Lag.Seconds())
	ch <- prometheus.MustNewConstMetric(admissionStartingDesc, prometheus.GaugeValue, float64(st.Last.Starting))
	if st.Last.CPU >= 0 {
		ch <- prometheus.MustNewConstMetric(cpuPressureDesc, prometheus.GaugeValue, st.Last.CPU)
	}
	if st.Last.Memory > 0 {
		ch <- prometheus.MustNewConstMetric(memoryAvailableDesc, prometheus.GaugeValue, float64(st.Last.Memory))
	}
}
