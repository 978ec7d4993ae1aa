package engine

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the engine's Prometheus metrics, shared by every partition.
type Metrics struct {
	EventsConsumed *prometheus.CounterVec
	LateEvents     *prometheus.CounterVec
	DecodeErrors   *prometheus.CounterVec
	// Checks counts, per rule, the verdicts a rule reached: the SLI's
	// denominator, with Violations its numerator. What one check is depends
	// on the kind (see docs/rules.md, "Objectives"): a trigger judged (absence), a distinct
	// event (unique), a transition applied (transition), a deadline reached
	// or made moot by a newer event (state).
	Checks *prometheus.CounterVec
	// Objective is, per rule, the share of checks that must pass.
	Objective   *prometheus.GaugeVec
	Violations  *prometheus.CounterVec
	Resolutions *prometheus.CounterVec
	Watermark   *prometheus.GaugeVec
	Pending     *prometheus.GaugeVec
	// UniqueEvents and UniqueDuplicates count the events of unique rules and
	// those that were duplicates: their ratio is the duplicate rate, to hold
	// against UniqueObjective.
	UniqueEvents     *prometheus.CounterVec
	UniqueDuplicates *prometheus.CounterVec
	UniqueObjective  *prometheus.GaugeVec
	StaleEvents      *prometheus.CounterVec
	// DetectionDelay is, per rule, how far the watermark had passed a
	// violation's deadline when it was recorded, in event time.
	DetectionDelay *prometheus.HistogramVec
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
		Checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_checks_total", Help: "Verdicts a rule reached (its SLI's denominator; invmon_violations_total is the numerator), per rule.",
		}, []string{"rule"}),
		Objective: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invmon_slo_objective_ratio", Help: "A rule's objective: the share of its checks that must not violate it, over its slo_window.",
		}, []string{"rule"}),
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
		UniqueEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_unique_events_total", Help: "Distinct events seen by a unique rule.",
		}, []string{"rule"}),
		UniqueDuplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_unique_duplicates_total", Help: "Events a unique rule found to duplicate an earlier effect.",
		}, []string{"rule"}),
		UniqueObjective: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invmon_unique_objective_ratio", Help: "A unique rule's objective: the share of events that must not be duplicates.",
		}, []string{"rule"}),
		StaleEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_stale_events_total", Help: "Transition events older than the entity's applied state, ignored.",
		}, []string{"rule"}),
		DetectionDelay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "invmon_detection_delay_seconds",
			Help:    "Event time between a violation's deadline and the watermark that judged it.",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600},
		}, []string{"rule"}),
	}
	if reg != nil {
		reg.MustRegister(m.DetectionDelay, m.Checks, m.Objective)
		reg.MustRegister(m.EventsConsumed, m.LateEvents, m.DecodeErrors, m.Violations, m.Resolutions, m.Watermark, m.Pending,
			m.UniqueEvents, m.UniqueDuplicates, m.UniqueObjective, m.StaleEvents)
	}
	return m
}
