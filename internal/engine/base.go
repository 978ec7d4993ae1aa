package engine

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/cel-go/common/types/ref"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// evaluator is one rule on one partition. The partition decodes a record,
// asks each evaluator whose side matches to extract what it needs (phase
// one, which may fail and reject the record), then applies the matches
// (phase two, which cannot fail).
type evaluator interface {
	base() *ruleBase
	// extract evaluates the kind's own expressions for a matching event.
	extract(ev *rules.Event, ref *sideRef, m *match) error
	apply(m *match, now time.Time)
	advance(now time.Time)
	// duePrefixes lists the time-ordered key prefixes advance scans.
	duePrefixes() []string
	// load reads the little the evaluator keeps outside keyed state.
	load()
	pending() int
}

// Roles of a rule side.
const (
	roleTrigger = iota // absence `when`; the `on` of the other kinds
	roleExpect         // absence `expect`
)

// ruleBase is what every kind shares: inputs, watermark, lookups, impact,
// and recording violations.
type ruleBase struct {
	p        *Partition
	rule     *rules.Rule
	streams  []*streamState
	wm       time.Time
	resolver *lookupResolver
	// prefix is r/<rule id>/ (statekey.RulePrefix), under which the rule
	// keeps its state.
	prefix string
	// memo is the last key built by key: an event reads a record and
	// writes it back under the same key, which is then built once.
	memo struct{ kind, rest, key string }

	pendingGauge   prometheus.Gauge
	watermarkGauge prometheus.Gauge
	checks         prometheus.Counter
	violations     prometheus.Counter
	resolutions    prometheus.Counter
	delay          prometheus.Observer
}

func newRuleBase(p *Partition, r *rules.Rule) ruleBase {
	b := ruleBase{
		p:              p,
		rule:           r,
		prefix:         statekey.RulePrefix(r.Name),
		pendingGauge:   p.metrics.Pending.WithLabelValues(r.Name, p.idLabel),
		watermarkGauge: p.metrics.Watermark.WithLabelValues(r.Name, p.idLabel),
		checks:         p.metrics.Checks.WithLabelValues(r.Name),
		violations:     p.metrics.Violations.WithLabelValues(r.Name),
		resolutions:    p.metrics.Resolutions.WithLabelValues(r.Name),
		delay:          p.metrics.DetectionDelay.WithLabelValues(r.Name),
	}
	if r.Objective > 0 {
		p.metrics.Objective.WithLabelValues(r.Name).Set(r.Objective)
	}
	for _, s := range r.Inputs() {
		b.streams = append(b.streams, p.streams[s.Name])
	}
	if len(r.Lookups) > 0 {
		b.resolver = &lookupResolver{p: p, lookups: r.Lookups}
	}
	return b
}

func (b *ruleBase) base() *ruleBase { return b }

// key returns the rule's state key r/<rule id>/<kind>/<rest>, built with one
// allocation in the partition's key buffer.
func (b *ruleBase) key(kind, rest string) string {
	if m := &b.memo; m.kind == kind && m.rest == rest && m.key != "" {
		return m.key
	}
	kb := append(b.p.kb[:0], b.prefix...)
	kb = append(append(kb, kind...), '/')
	n := len(kb)
	kb = append(kb, rest...)
	b.p.kb = kb
	k := string(kb)
	// rest is kept as a part of the key, never as the caller's string,
	// which may alias a buffer that is reused.
	b.memo.kind, b.memo.rest, b.memo.key = kind, k[n:], k
	return k
}

// timeKey returns the time-ordered key r/<rule id>/<kind>/<time><key>, or with
// withID r/<rule id>/<kind>/<time><key>\x00<id>, built with one allocation.
func (b *ruleBase) timeKey(kind string, t time.Time, key string, withID bool, id string) string {
	return string(b.buildTimeKey(kind, t, key, withID, id))
}

// delTimeKey deletes the key timeKey names. A key written in the batch in
// hand and never durable is dropped without building its string at all:
// most deadlines are met in the batch that set them.
func (b *ruleBase) delTimeKey(kind string, t time.Time, key string, withID bool, id string) {
	kb := b.buildTimeKey(kind, t, key, withID, id)
	if op, ok := b.p.delta.Ops[string(kb)]; ok && op.fresh {
		delete(b.p.delta.Ops, string(kb))
		return
	}
	b.p.del(string(kb))
}

// buildTimeKey builds timeKey's key in the partition's key buffer.
func (b *ruleBase) buildTimeKey(kind string, t time.Time, key string, withID bool, id string) []byte {
	kb := append(b.p.kb[:0], b.prefix...)
	kb = append(append(kb, kind...), '/')
	kb = append(statekey.AppendTime(kb, t), key...)
	if withID {
		kb = append(append(kb, 0), id...)
	}
	b.p.kb = kb
	return kb
}

// computeWatermark moves the rule's watermark: the minimum over its inputs,
// or the clock minus the largest lateness when every input is caught up and
// idle. It never moves backwards.
func (b *ruleBase) computeWatermark(now time.Time) time.Time {
	var wm, newest time.Time
	allIdle := true
	var lateness time.Duration
	for _, st := range b.streams {
		if st.maxEventTime.After(newest) {
			newest = st.maxEventTime
		}
	}
	for i, st := range b.streams {
		w := st.watermark()
		// A lagging input holds verdicts at most max_hold behind the newest.
		if st.s.MaxHold > 0 && !newest.IsZero() {
			if floor := newest.Add(-st.s.AllowedLateness - st.s.MaxHold); floor.After(w) {
				w = floor
			}
		}
		if i == 0 || w.Before(wm) {
			wm = w
		}
		allIdle = allIdle && st.idle(now)
		lateness = max(lateness, st.s.AllowedLateness)
	}
	// A blind input must not be overtaken by the clock either: the monitor
	// never judges absence it cannot see.
	if allIdle && len(b.blind()) == 0 {
		if c := now.Add(-lateness); c.After(wm) {
			wm = c
		}
	}
	if wm.Before(b.wm) {
		wm = b.wm
	}
	b.wm = wm
	if !wm.IsZero() {
		b.watermarkGauge.Set(float64(wm.UnixNano()) / 1e9)
	}
	return wm
}

// blind returns the rule's inputs that lag the rule's newest input by more
// than their max_lag in event time, with the lag. A producer that stalled
// while others go on looks exactly like thousands of missing events; the
// watermark already holds the verdicts, and this names the cause.
func (b *ruleBase) blind() map[*streamState]time.Duration {
	if len(b.streams) < 2 {
		return nil
	}
	var newest time.Time
	for _, st := range b.streams {
		if st.maxEventTime.After(newest) {
			newest = st.maxEventTime
		}
	}
	var out map[*streamState]time.Duration
	for _, st := range b.streams {
		if st.s.MaxLag <= 0 || st.maxEventTime.IsZero() {
			continue
		}
		if lag := newest.Sub(st.maxEventTime); lag > st.s.MaxLag {
			if out == nil {
				out = map[*streamState]time.Duration{}
			}
			out[st] = lag
		}
	}
	return out
}

// impact evaluates the rule's impact for the event that triggers a
// violation: how much, and whose.
func (b *ruleBase) impact(ev *rules.Event) (float64, string, error) {
	value := 1.0
	if x := b.rule.Impact.Value; x != nil {
		v, err := x.Eval(ev)
		if err != nil {
			return 0, "", fmt.Errorf("impact.value: %w", err)
		}
		// An infinite or NaN amount (`1e400` in JSON) can neither be summed
		// into a page nor stored: the record is malformed for this rule.
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return 0, "", fmt.Errorf("impact.value: %v is not a finite number", v)
		}
		value = v
	}
	var customer string
	if x := b.rule.Impact.Customer; x != nil {
		c, err := x.EvalTransient(ev)
		if err != nil {
			return 0, "", fmt.Errorf("impact.customer: %w", err)
		}
		customer = c
	}
	return value, customer, nil
}

// judged counts one check: the rule reached a verdict, pass or violation,
// on one thing it watches. Every kind calls it exactly once per check.
func (b *ruleBase) judged() { b.checks.Inc() }

// trigger is what a violation needs of the event that caused it.
type trigger struct {
	Key       string           `json:"key"`
	EventID   string           `json:"event_id"`
	EventTime time.Time        `json:"event_time"`
	Impact    float64          `json:"impact"`
	Customer  string           `json:"customer,omitempty"`
	Source    violation.Source `json:"source"`
}

func (m *match) trigger() trigger {
	return trigger{Key: m.key, EventID: m.eventID, EventTime: m.time, Impact: m.impact, Customer: m.customer, Source: m.src}
}

// open records a violation for t unless one with its id exists (the same
// trigger read again). It returns the violation, or nil when it existed.
func (b *ruleBase) open(t trigger, deadline, now time.Time, detail string) *violation.Violation {
	id := violation.ID(b.rule.Name, b.rule.Version, t.Key, t.EventID)
	if _, ok := b.p.get(statekey.Violation + id); ok {
		return nil
	}
	// The violation outlives the record: its strings are copied out of the
	// decode buffer they may share (see Partition.Apply).
	v := &violation.Violation{
		ID: id, Rule: b.rule.Name, RuleVersion: b.rule.Version, Key: strings.Clone(t.Key), State: violation.Open,
		Impact: t.Impact, Customer: strings.Clone(t.Customer), TriggerEventID: strings.Clone(t.EventID), EventTime: t.EventTime,
		Deadline: deadline, DetectedAt: now, Watermark: b.wm, Source: t.Source, Detail: detail,
		DecidedWhileBlind: len(b.blind()) > 0,
	}
	b.violations.Inc()
	if deadline.After(t.EventTime) && !b.wm.IsZero() {
		b.delay.Observe(max(0, b.wm.Sub(deadline).Seconds()))
	}
	b.p.putViolation(v, nil)
	return v
}

// resolve marks the open violation id repaired by an event at event time by.
func (b *ruleBase) resolve(id string, by, now time.Time) {
	prev := b.p.getViolation(id)
	if prev == nil || prev.State != violation.Open {
		return
	}
	v := *prev
	v.State = violation.Resolved
	at, byT := now, by
	v.ResolvedAt, v.ResolvedByEventTime = &at, &byT
	b.resolutions.Inc()
	b.p.putViolation(&v, prev)
}

// lookupResolver resolves a rule's lookup names to the latest event of the
// looked-up entity on this partition.
type lookupResolver struct {
	p       *Partition
	lookups []*rules.Lookup
}

func (r *lookupResolver) Resolve(name string, ev *rules.Event) (ref.Val, bool) {
	for _, l := range r.lookups {
		if l.Name != name {
			continue
		}
		// The key expression reads only the event, never a lookup.
		saved := ev.Lookups
		ev.Lookups = nil
		key, err := l.Key.EvalTransient(ev)
		ev.Lookups = saved
		if err != nil {
			return rules.EmptyObject, true
		}
		e := r.p.tables[l.Stream.Name].get(r.p, key)
		if e == nil {
			return rules.EmptyObject, true
		}
		return e.parsed(&r.p.dec, l.Stream.Topic), true
	}
	return nil, false
}

// table is the latest event per entity key of one stream on one partition,
// kept in state under t/<stream>/<key>: what lookups and state rules read.
type table struct {
	name string
}

type tableEntry struct {
	time  time.Time
	id    string
	raw   []byte
	value ref.Val
}

// parsed decodes the stored value once, in the format of its topic.
func (e *tableEntry) parsed(dec *rules.Decoder, topic string) ref.Val {
	if e.value == nil {
		v, err := dec.Object(topic, e.raw)
		if err != nil {
			// Only values that decoded once are stored; a failure here means
			// corrupt state (or a schema the registry cannot serve right
			// now), and an empty entity is the safe reading.
			return rules.EmptyObject
		}
		e.value = v
	}
	return e.value
}

func (t *table) get(p *Partition, key string) *tableEntry {
	if t == nil {
		return nil
	}
	v, ok := p.get(p.tableKey(t.name, key))
	if !ok {
		return nil
	}
	e, err := decodeTableEntry(v)
	if err != nil {
		p.fail(fmt.Errorf("table %s key %q: %w", t.name, key, err))
		return nil
	}
	return e
}

// tableKey returns t/<stream>/<key>, built in the partition's key buffer.
func (p *Partition) tableKey(stream, key string) string {
	kb := append(append(p.kb[:0], statekey.Table...), stream...)
	kb = append(append(kb, '/'), key...)
	p.kb = kb
	return string(kb)
}

// tablePut keeps the newer of the stored and the given event for key.
func (p *Partition) tablePut(t *table, key, id string, at time.Time, raw []byte) {
	k := p.tableKey(t.name, key)
	old, ok := p.get(k)
	if ok && len(old) >= 8 && at.Before(statekey.Time(old[:8])) {
		return
	}
	p.put(k, encodeTableEntry(&tableEntry{time: at, id: id, raw: raw}), !ok)
}
func encodeTableEntry(e *tableEntry) []byte {
	b := make([]byte, 0, 8+2+len(e.id)+len(e.raw))
	b = statekey.AppendTime(b, e.time)
	b = append(b, byte(len(e.id)>>8), byte(len(e.id)))
	b = append(b, e.id...)
	return append(b, e.raw...)
}

func decodeTableEntry(v []byte) (*tableEntry, error) {
	if len(v) < 10 {
		return nil, fmt.Errorf("corrupt table entry")
	}
	n := int(v[8])<<8 | int(v[9])
	if len(v) < 10+n {
		return nil, fmt.Errorf("corrupt table entry")
	}
	return &tableEntry{time: statekey.Time(v[:8]), id: string(v[10 : 10+n]), raw: append([]byte(nil), v[10+n:]...)}, nil
}
