package engine

import (
	"fmt"
	"math"
	"runtime/debug"
	"time"
	"unicode/utf8"
)

// TimeBounds is the range of event times the engine accepts. An event time
// outside it is a producer bug (a year past 9999, a Kafka timestamp in
// microseconds read as milliseconds, a zero date): applied, it would move a
// watermark years ahead and fire every open deadline, or fail to encode in
// state. Such a record is a dead letter with reason bad_time instead.
type TimeBounds struct {
	// Min is the earliest event time accepted. Default 1970-01-01T00:00:00Z.
	Min time.Time
	// Max is the latest event time accepted. Default 2200-01-01T00:00:00Z,
	// which leaves every window and deadline representable in state
	// (nanoseconds since 1970 fit an int64 until 2262).
	Max time.Time
	// MaxFuture, when positive, also rejects event times more than this far
	// ahead of the clock passed to Apply. Default 0 (off), since replays and
	// rule tests pass clocks unrelated to the events' times.
	MaxFuture time.Duration
}

// DefaultTimeBounds returns the bounds a partition starts with.
func DefaultTimeBounds() TimeBounds {
	return TimeBounds{
		Min: time.Unix(0, 0).UTC(),
		Max: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

// withDefaults fills unset bounds and clamps Max to what state can encode.
func (b TimeBounds) withDefaults() TimeBounds {
	d := DefaultTimeBounds()
	if b.Min.IsZero() {
		b.Min = d.Min
	}
	if b.Max.IsZero() || b.Max.After(d.Max) {
		b.Max = d.Max
	}
	return b
}

// check returns why t is out of bounds, or nil.
func (b TimeBounds) check(t, now time.Time) error {
	switch {
	case t.Before(b.Min):
		return fmt.Errorf("event time %s is before the earliest accepted %s", fmtTime(t), fmtTime(b.Min))
	case !t.Before(b.Max):
		return fmt.Errorf("event time %s is not before the latest accepted %s", fmtTime(t), fmtTime(b.Max))
	case b.MaxFuture > 0 && t.Sub(now) > b.MaxFuture:
		return fmt.Errorf("event time %s is more than %s ahead of the clock (%s)", fmtTime(t), b.MaxFuture, fmtTime(now))
	}
	return nil
}

// fmtTime formats any time.Time, including years RFC 3339 cannot hold.
func fmtTime(t time.Time) string {
	if y := t.Year(); y < 0 || y > 9999 {
		return t.UTC().String()
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// SetTimeBounds sets the event times the partition accepts; unset fields
// keep their defaults (see TimeBounds).
func (p *Partition) SetTimeBounds(b TimeBounds) { p.bounds = b.withDefaults() }

// PanicError is what Apply returns when evaluating a record panicked while
// applying it to state: the partition's in-memory state may be half-changed
// and must be discarded (rebuilt from its durable state) before the next
// record. The record itself is known, so the caller can dead-letter it.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic while applying record: %v", e.Value) }

// panicked turns a panic inside Apply into an error. Before state is
// touched the record is simply a dead letter (reason "panic"); after, the
// partition is poisoned (PanicError).
func (p *Partition) panicked(topic string, r any, mutating bool) error {
	if mutating {
		return &PanicError{Value: r, Stack: debug.Stack()}
	}
	return p.reject(topic, &DecodeError{Reason: ReasonPanic, Err: fmt.Errorf("evaluation panicked: %v", r)})
}

// validate rejects what state could not keep exactly: strings that are not
// UTF-8 (state stores them as JSON strings, which would replace the bad
// bytes), an impact that is not finite, a deadline out of bounds (JSON has
// no NaN, Inf or years past 9999).
func (m *match) validate(b TimeBounds) *DecodeError {
	for _, f := range [...]struct{ name, v string }{{"id", m.eventID}, {"key", m.key}, {"customer", m.customer}, {"state", m.state}} {
		if !utf8.ValidString(f.v) {
			return &DecodeError{Reason: ReasonNotUTF8, Err: fmt.Errorf("%s %q is not valid UTF-8", f.name, f.v)}
		}
	}
	if math.IsNaN(m.impact) || math.IsInf(m.impact, 0) {
		return &DecodeError{Reason: ReasonBadImpact, Err: fmt.Errorf("impact %v is not a finite number", m.impact)}
	}
	if math.IsNaN(m.version) || math.IsInf(m.version, 0) {
		return &DecodeError{Reason: ReasonBadField, Err: fmt.Errorf("version %v is not a finite number", m.version)}
	}
	if !m.deadline.IsZero() {
		if err := (TimeBounds{Min: b.Min, Max: b.Max}).check(m.deadline, time.Time{}); err != nil {
			return &DecodeError{Reason: ReasonBadTime, Err: fmt.Errorf("deadline: %w", err)}
		}
	}
	return nil
}
