package rules

import (
	"fmt"
	"time"

	"github.com/invmon/invmon/internal/quantity"
)

// Defaults of stream settings, used when a stream does not set them.
const (
	// DefaultAllowedLateness is how far behind the newest event time an event
	// may arrive and still count as on time: 5s.
	DefaultAllowedLateness = 5 * time.Second
	// DefaultIdleAfter is how long a caught-up input must be silent before the
	// watermark follows the clock: 10s.
	DefaultIdleAfter = 10 * time.Second
)

// Kinds of rule.
const (
	KindAbsence    = "absence"
	KindUnique     = "unique"
	KindTransition = "transition"
	KindState      = "state"
)

// Formats of record values.
const (
	FormatJSON       = "json"
	FormatAvro       = "avro"
	FormatProtobuf   = "protobuf"
	FormatJSONSchema = "json_schema"
)

// Formats lists the supported stream formats.
var Formats = []string{FormatJSON, FormatAvro, FormatProtobuf, FormatJSONSchema}

var supportedKinds = []string{KindAbsence, KindUnique, KindTransition, KindState}

// DefaultRetention is how long transition and state rules keep an entity's
// state after its last event: 7 days.
const DefaultRetention = 7 * 24 * time.Hour

// RuleSet is a loaded, validated and compiled set of rule files. It is
// immutable, so a reload builds a new one and swaps it in whole.
type RuleSet struct {
	Files   []string
	Streams map[string]*Stream
	Rules   []*Rule
	// Version is a hash of every rule's version: it changes when any rule does.
	Version string

	// formats decodes the topics of streams whose format is not JSON; set
	// once by BindFormats before the rule set is used.
	formats map[string]ValueFormat
	// checks are the event expressions, kept with their source positions
	// so they can be type-checked against registered schemas (TypeCheck).
	checks []exprCheck
	// Warnings are what the files allow but is likely wrong, each with file,
	// line and column: an expression that would exceed the per-evaluation
	// cost limit on the largest event.
	Warnings Errors
}

// Stream is a named, decoded view of a topic.
type Stream struct {
	Name  string
	Topic string
	// Format is how record values are encoded: json (the default), avro,
	// protobuf or json_schema; the last three in the Confluent wire format
	// with their schemas in a Schema Registry.
	Format string
	// Subject is the Schema Registry subject whose latest schema the rules
	// are type-checked against. Default "<topic>-value" (TopicNameStrategy).
	Subject         string
	ID              *StringExpr
	Key             *StringExpr
	Time            *TimeExpr
	AllowedLateness time.Duration
	IdleAfter       time.Duration
	// MaxLag is how far an input may fall behind before the monitor says it is
	// blind rather than guess; 0 disables the check.
	MaxLag time.Duration
	// MaxHold bounds how long verdicts wait for this input when it lags:
	// beyond it, the rule's watermark moves on as if the input were MaxHold
	// behind the newest one, and what is decided meanwhile is marked as
	// decided while blind. 0 (the default) holds until the input catches up.
	MaxHold time.Duration

	spec *streamSpec
	pos  Pos
}

// Rule is one compiled invariant.
type Rule struct {
	Name        string
	Kind        string
	Description string
	// Version is a hash of the rule and the streams it reads: violations carry
	// it, so a changed rule never reuses an old rule's violation ids.
	Version     string
	Labels      map[string]string
	Annotations map[string]string
	Impact      Impact
	Severity    []SeverityTier
	// Lookups are the other entities the rule's expressions may read.
	Lookups []*Lookup
	// Objective, when above zero, is the share of the rule's checks that must
	// pass over SLOWindow (for example 0.999 over 28 days): the rule's
	// consistency SLO, whose error budget is 1 − Objective. Zero means the
	// rule has no SLO.
	Objective float64
	// SLOWindow is the period the objective is judged over; DefaultSLOWindow
	// when the rule sets an objective and no window.
	SLOWindow time.Duration
	// Exactly one of Absence, Unique, Transition and State is set, by Kind.
	Absence    *Absence
	Unique     *Unique
	Transition *Transition
	State      *StateRule
	// Pos is where the rule is defined.
	Pos Pos
	// Source is the rule's YAML as written in its file (comments kept,
	// re-indented), for people: the console shows it.
	Source string
}

// Inputs returns the streams whose events the rule evaluates: together
// they hold the rule's watermark. Lookups are not inputs: a reference table
// that changes once a month must not hold back a rule on busy payments.
func (r *Rule) Inputs() []*Stream {
	switch {
	case r.Absence != nil:
		if r.Absence.When.Stream == r.Absence.Expect.Stream {
			return []*Stream{r.Absence.When.Stream}
		}
		return []*Stream{r.Absence.When.Stream, r.Absence.Expect.Stream}
	case r.Unique != nil:
		return []*Stream{r.Unique.On.Stream}
	case r.Transition != nil:
		return []*Stream{r.Transition.On.Stream}
	case r.State != nil:
		return []*Stream{r.State.On.Stream}
	}
	return nil
}

// Streams returns every stream the rule reads, its lookups' included,
// without duplicates: they must all be co-partitioned.
func (r *Rule) Streams() []*Stream {
	out := r.Inputs()
	for _, l := range r.Lookups {
		dup := false
		for _, s := range out {
			dup = dup || s == l.Stream
		}
		if !dup {
			out = append(out, l.Stream)
		}
	}
	return out
}

// Lookup makes the latest event of another entity visible under Name.
type Lookup struct {
	Name   string
	Stream *Stream
	// Key is evaluated on the rule's event to find the entity.
	Key *StringExpr
}

// Unique says: two events with the same key (an idempotency key) but
// different event ids within Window are a duplicate effect. Of each such
// pair the later one, by event time then id, is the duplicate, so the verdict
// does not depend on the order events are read in.
type Unique struct {
	On     Side
	Window time.Duration
}

// Transition says: an entity's state may only move along Allowed edges.
type Transition struct {
	On    Side
	State *StringExpr
	// Version orders an entity's events when set; else event time does.
	Version *NumberExpr
	// Initial lists the states an entity may start in; nil allows any.
	Initial map[string]bool
	// Allowed maps a state to the states it may move to. Staying in a state
	// is always allowed (a retried event).
	Allowed   map[string]map[string]bool
	Retention time.Duration
}

// StateRule says: Condition over an entity's latest event (and its lookups)
// must not still hold at Until (a deadline taken from the data), or must not
// hold for longer than For.
type StateRule struct {
	On        Side
	Condition *BoolExpr
	Until     *TimeExpr
	For       time.Duration
	Retention time.Duration
}

// SeverityOf returns the first severity tier that holds for agg, or "page"
// when the rule defines no tiers: an invariant without tiers is urgent.
func (r *Rule) SeverityOf(agg Aggregate) (string, error) {
	if len(r.Severity) == 0 {
		return "page", nil
	}
	for i := range r.Severity {
		ok, err := r.Severity[i].Holds(agg)
		if err != nil {
			return "", fmt.Errorf("rule %q: severity %q: %w", r.Name, r.Severity[i].Name, err)
		}
		if ok {
			return r.Severity[i].Name, nil
		}
	}
	return "", nil
}

// Impact says how much a violation matters and to whom.
type Impact struct {
	// Value is money at risk or another weight; nil means 1 per violation.
	Value *NumberExpr
	// Customer names whose impact it is; nil means unknown.
	Customer *StringExpr
	// Unit names Value's unit for humans, such as "USD".
	Unit string
}

// Quantity returns the unit with its precision; a rule without Value
// counts violations, and its impact is never summed with amounts.
func (i Impact) Quantity() quantity.Unit { return quantity.UnitOf(i.Unit, i.Value != nil) }

// Side is one side of a join: events of a stream, filtered, keyed.
type Side struct {
	Stream    *Stream
	Condition *BoolExpr
	// Key is the join key; when the rule sets none it is the stream's key.
	Key *StringExpr
}

// Absence says: an event matching When must be followed (or, with
// Lookback, preceded) by an event matching Expect with the same join key
// within Within.
type Absence struct {
	When     Side
	Expect   Side
	Within   time.Duration
	Lookback time.Duration
	// RedeliveryWindow keeps expect events that much longer than the window
	// needs, so that a trigger read late (a replayed queue job, a producer
	// retrying out of order) still finds the event that satisfied it instead
	// of firing. Default DefaultRedeliveryWindow(Within); 0 when a rule sets
	// `redelivery_window: 0`.
	RedeliveryWindow time.Duration
}

// Bounds of the default redelivery window: state is on disk, so expect
// events are remembered generously by default.
const (
	// MinDefaultRedeliveryWindow is the smallest default redelivery window.
	MinDefaultRedeliveryWindow = 15 * time.Minute
	// RedeliveryWithinFactor times a rule's within is its default
	// redelivery window when that is longer than MinDefaultRedeliveryWindow.
	RedeliveryWithinFactor = 10
)

// DefaultRedeliveryWindow is the redelivery window of an absence rule that
// sets none: the larger of 15 minutes and ten times within.
func DefaultRedeliveryWindow(within time.Duration) time.Duration {
	return max(MinDefaultRedeliveryWindow, RedeliveryWithinFactor*within)
}
