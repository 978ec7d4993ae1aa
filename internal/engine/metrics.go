package engine

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the engine's Prometheus metrics, shared by every partition.
type Metrics struct {
	EventsConsumed *prometheus.CounterVec
	LateEvents     *prometheus.CounterVec
	DecodeErrors   *prometheus.CounterVec
	Violations     *prometheus.CounterVec
	Resolutions    *prometheus.CounterVec
	Watermark      *prometheus.GaugeVec
	Pending        *prometheus.GaugeVec
}

// NewMetrics creates the engine metrics and registers them on reg (which may
// be nil, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		EventsConsumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_events_consumed_total", Help: "Events decoded and applied, per stream.",
		}, []string{"stream"}),
		LateEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_late_events_total", Help: "Events whose event time was behind their stream's watermark; they are still applied.",
		}, []string{"stream"}),
		DecodeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_decode_errors_total", Help: "Records that could not be decoded or evaluated, per topic and reason; each goes to the dead-letter topic.",
		}, []string{"topic", "reason"}),
		Violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_violations_total", Help: "Violations detected, per rule.",
		}, []string{"rule"}),
		Resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_violations_resolved_total", Help: "Violations resolved by a late event, per rule.",
		}, []string{"rule"}),
		Watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invmon_watermark_seconds", Help: "A rule's event-time watermark on a partition, as unix seconds.",
		}, []string{"rule", "partition"}),
		Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invmon_pending_expectations", Help: "Expectations waiting for their deadline, per rule and partition.",
		}, []string{"rule", "partition"}),
	}
	if reg != nil {
		reg.MustRegister(m.EventsConsumed, m.LateEvents, m.DecodeErrors, m.Violations, m.Resolutions, m.Watermark, m.Pending)
	}
	return m
}
