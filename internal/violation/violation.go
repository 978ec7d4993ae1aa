// Package violation defines the record of a broken invariant that flows from
// the engine to storage, the HTTP API and the alerting side.
package violation

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// State is the lifecycle state of a violation.
type State string

const (
	// Open means the invariant is broken and nothing has repaired it yet.
	Open State = "open"
	// Resolved means the invariant became satisfied after it was broken
	// (for example the ledger entry arrived after its deadline). A resolved
	// violation is kept: late arrival is information.
	Resolved State = "resolved"
)

// Source locates the Kafka record that triggered a violation.
type Source struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Violation is one broken invariant for one entity.
type Violation struct {
	// ID is deterministic: see ID. Re-reading the same input yields the same ids.
	ID          string `json:"id"`
	Rule        string `json:"rule"`
	RuleVersion string `json:"rule_version"`
	// Key is the entity the rule joins on (for example the payment id).
	Key   string `json:"key"`
	State State  `json:"state"`
	// Impact is the rule's impact.value for this violation (for example money at risk).
	Impact float64 `json:"impact"`
	// ImpactBand is set when the outputs show impact as a band
	// (privacy.impact_bands): "1000-10000", "<100" or ">=10000"; Impact is
	// then the band's lower bound.
	ImpactBand string `json:"impact_band,omitempty"`
	// Customer is the rule's impact.customer (for example the account id).
	Customer string `json:"customer,omitempty"`
	// TriggerEventID is the id of the event that started the expectation.
	TriggerEventID string `json:"trigger_event_id"`
	// EventTime is the triggering event's event time.
	EventTime time.Time `json:"event_time"`
	// Deadline is the event time by which the invariant had to hold.
	Deadline time.Time `json:"deadline"`
	// DetectedAt is the monitor's clock when the violation was recorded.
	DetectedAt time.Time `json:"detected_at"`
	// Watermark is the rule's event-time watermark when the violation was
	// recorded: Watermark - Deadline is the detection delay in event time.
	Watermark time.Time `json:"watermark"`
	// ResolvedAt is the monitor's clock when the violation was resolved.
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
	// ResolvedByEventTime is the event time of the event that resolved it.
	ResolvedByEventTime *time.Time `json:"resolved_by_event_time,omitempty"`
	// Source is the triggering record.
	Source Source `json:"source"`
	// DecidedWhileBlind is true when an input of the rule lagged beyond its
	// max_lag when this was decided, and the verdict was released by its
	// max_hold rather than by the input catching up: treat it with doubt.
	DecidedWhileBlind bool `json:"decided_while_blind,omitempty"`
	// Detail says what was wrong in the rule's terms, when the kind has more
	// to say than its name (for example "captured -> pending").
	Detail string `json:"detail,omitempty"`
}

// ID returns the deterministic id of a violation: a hash of the rule's name
// and version, the entity key and the triggering event id. The same input read
// twice (redelivery, restart, replay) yields the same id, never a new one.
func ID(rule, ruleVersion, key, triggerEventID string) string {
	h := sha256.New()
	for _, s := range []string{rule, ruleVersion, key, triggerEventID} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}
