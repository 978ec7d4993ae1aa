// Package alert turns open violations into Alertmanager alerts.
//
// It has two halves:
//
//   - Client posts alerts to one Alertmanager's API v2 (POST /api/v2/alerts),
//     the way Prometheus's notifier does, retrying 5xx and network errors with
//     exponential back-off.
//   - Manager owns the alert lifecycle: it aggregates each rule's open
//     violations (count, distinct customers, total impact, top entities), picks
//     a severity, fires, re-sends and resolves one alert per rule, and persists
//     what it has sent in Badger so a restart neither loses a page nor changes
//     its startsAt.
//
// Alert identity is the label set (alertname, severity, the rule's static
// labels). Entity ids and amounts go in annotations, never in labels, so an
// incident with a thousand broken payments is one alert, not a thousand.
package alert

import (
	"time"
)

// Alert is one alert as Alertmanager's API v2 accepts it (its PostableAlert).
//
// Alertmanager's own Go module is heavy, so the JSON shape is defined here.
// A firing alert carries an EndsAt in the future (Alertmanager resolves it by
// itself if it is not re-sent before then); a resolved alert carries the
// resolution time as EndsAt.
type Alert struct {
	// Labels identify the alert; Alertmanager fingerprints this set.
	Labels map[string]string `json:"labels"`
	// Annotations are informational and may change without changing identity.
	Annotations map[string]string `json:"annotations,omitempty"`
	// StartsAt is when the alert started firing.
	StartsAt time.Time `json:"startsAt,omitzero"`
	// EndsAt is when the alert ends (resolved) or will end unless re-sent (firing).
	EndsAt time.Time `json:"endsAt,omitzero"`
	// GeneratorURL links back to the monitor's view of what caused the alert.
	GeneratorURL string `json:"generatorURL,omitempty"`
}
