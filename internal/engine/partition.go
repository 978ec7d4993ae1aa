// Package engine evaluates invariants over the events of one partition.
//
// It is pure given its inputs: events, the time passed in, and the state it
// was loaded from. Nothing here reads the wall clock or touches Kafka or
// Badger; durable changes leave as a Delta that the caller writes, with the
// partition's offsets, before committing to Kafka.
package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// Record is one Kafka record as the engine sees it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Timestamp time.Time
}

// Reasons a record is rejected; they label metrics and dead-letter headers.
const (
	ReasonMalformed    = "malformed_json"
	ReasonBadID        = "bad_id"
	ReasonBadKey       = "bad_key"
	ReasonBadTime      = "bad_time"
	ReasonBadCondition = "bad_condition"
	ReasonBadImpact    = "bad_impact"
	ReasonBadField     = "bad_field"
	ReasonOversized    = "oversized"
	ReasonBadKeyBytes  = "bad_record_key"
	// ReasonPanic marks a record whose evaluation panicked before it changed
	// any state: a bug in the monitor or in a CEL extension, never a reason
	// to stop the partition.
	ReasonPanic = "panic"
	// ReasonNotUTF8 marks a record whose id, key, customer or state is not
	// valid UTF-8: state stores them as JSON strings, which would replace the
	// bad bytes and make the key differ after a reload (a false violation).
	ReasonNotUTF8 = "not_utf8"
)

// MaxValueBytes bounds a record value the engine decodes (256 KiB): a
// business event is a few hundred bytes, and a huge one is a producer bug
// that would cost every rule its parsing.
const MaxValueBytes = rules.MaxEventBytes

// DecodeError says why a record could not be applied. The record changed no
// state; the caller routes it to the dead-letter topic and moves on.
type DecodeError struct {
	Reason string
	Stream string
	Rule   string
	Err    error
}

func (e *DecodeError) Error() string {
	var where []string
	if e.Stream != "" {
		where = append(where, "stream "+strconv.Quote(e.Stream))
	}
	if e.Rule != "" {
		where = append(where, "rule "+strconv.Quote(e.Rule))
	}
	if len(where) == 0 {
		return fmt.Sprintf("%s: %v", e.Reason, e.Err)
	}
	return fmt.Sprintf("%s (%s): %v", e.Reason, strings.Join(where, ", "), e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Partition holds the evaluation state of every rule for one partition number
// of the (co-partitioned) input topics. It is owned by one worker and is not
// safe for concurrent use.
type Partition struct {
	id         int32
	idLabel    string
	set        *rules.RuleSet
	metrics    *Metrics
	log        *zap.Logger
	dec        rules.Decoder
	routes     map[string][]*route
	streams    map[string]*streamState
	tables     map[string]*table
	evaluators []evaluator

	// snap is the durable state; delta the batch in hand; inflight the
	// deltas taken and not yet durable (see overlay.go).
	snap     Snapshot
	delta    *Delta
	inflight []*Delta
	counters []*counter
	// ordered lists the time-ordered prefixes scanned again and again
	// (scanDue), the only ones a delta indexes, each with where its next
	// due scan starts; in memory only, so a restart scans each range once
	// whole.
	ordered []orderedPrefix
	err     error
	// retention is how long resolved violations are kept (and their ids
	// after that); DefaultViolationRetention unless set.
	retention time.Duration
	// matches is reused per record to keep allocations off the per-event path.
	matches []match
	// kb is the buffer state keys are built in (see ruleBase.key).
	kb []byte
	// scanScratch is reused by scan (see overlay.go).
	scanScratch scanScratch
	// bounds is the accepted event-time range.
	bounds TimeBounds
}

type streamState struct {
	s            *rules.Stream
	maxEventTime time.Time
	lastEventAt  time.Time
	caughtUp     bool
	dirty        bool
	consumed     prometheus.Counter
	late         prometheus.Counter
}

// watermark is the newest event time minus the allowed lateness; the zero
// time when the stream has seen nothing.
func (s *streamState) watermark() time.Time {
	if s.maxEventTime.IsZero() {
		return time.Time{}
	}
	return s.maxEventTime.Add(-s.s.AllowedLateness)
}

// idle reports whether the input has caught up with its high-water mark and
// has been silent for the stream's idle_after.
func (s *streamState) idle(now time.Time) bool {
	return s.caughtUp && now.Sub(s.lastEventAt) >= s.s.IdleAfter
}

type route struct {
	stream *streamState
	sides  []sideRef
	// table, when set, keeps the latest event per entity of this stream.
	table *table
}

type sideRef struct {
	ev   evaluator
	side *rules.Side
	role int
}

// match is what one rule side extracted from a record, before any of it is
// applied: a record is applied whole or not at all.
type match struct {
	ref      *sideRef
	key      string
	eventID  string
	time     time.Time
	src      violation.Source
	impact   float64
	customer string
	// Kind-specific values.
	state      string
	version    float64
	hasVersion bool
	deadline   time.Time
	holds      bool
	// raw is the record value, for kinds that judge it again later.
	raw []byte
}

// NewPartition returns the evaluator of partition id over its durable state
// snap, which it reads on demand. now initializes the idle clocks of the streams.
func NewPartition(id int32, set *rules.RuleSet, snap Snapshot, metrics *Metrics, log *zap.Logger, now time.Time) (*Partition, error) {
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	if log == nil {
		log = zap.NewNop()
	}
	p := &Partition{
		id:        id,
		dec:       rules.NewDecoder(set),
		idLabel:   strconv.Itoa(int(id)),
		set:       set,
		metrics:   metrics,
		log:       log.With(zap.Int32("partition", id)),
		routes:    map[string][]*route{},
		streams:   map[string]*streamState{},
		tables:    map[string]*table{},
		snap:      snap,
		delta:     newDelta(0),
		bounds:    DefaultTimeBounds(),
		retention: DefaultViolationRetention,
	}
	for name, s := range set.Streams {
		p.streams[name] = &streamState{
			s:           s,
			lastEventAt: now,
			consumed:    metrics.EventsConsumed.WithLabelValues(name),
			late:        metrics.LateEvents.WithLabelValues(name),
		}
	}
	routeOf := func(s *rules.Stream) *route {
		st := p.streams[s.Name]
		for _, r := range p.routes[s.Topic] {
			if r.stream == st {
				return r
			}
		}
		r := &route{stream: st}
		p.routes[s.Topic] = append(p.routes[s.Topic], r)
		return r
	}
	tableOf := func(s *rules.Stream) {
		r := routeOf(s)
		if r.table == nil {
			r.table = &table{name: s.Name}
			p.tables[s.Name] = r.table
		}
	}
	if err := checkRuleIDs(set.Rules, statekey.RuleID); err != nil {
		return nil, err
	}
	for _, r := range set.Rules {
		var ev evaluator
		switch {
		case r.Absence != nil:
			a := newAbsence(p, r)
			ev = a
			routeOf(r.Absence.When.Stream).addSide(sideRef{ev: a, side: &r.Absence.When, role: roleTrigger})
			routeOf(r.Absence.Expect.Stream).addSide(sideRef{ev: a, side: &r.Absence.Expect, role: roleExpect})
		case r.Unique != nil:
			u := newUnique(p, r)
			ev = u
			routeOf(r.Unique.On.Stream).addSide(sideRef{ev: u, side: &r.Unique.On, role: roleTrigger})
		case r.Transition != nil:
			t := newTransition(p, r)
			ev = t
			routeOf(r.Transition.On.Stream).addSide(sideRef{ev: t, side: &r.Transition.On, role: roleTrigger})
		case r.State != nil:
			sr := newStateRule(p, r)
			ev = sr
			routeOf(r.State.On.Stream).addSide(sideRef{ev: sr, side: &r.State.On, role: roleTrigger})
			tableOf(r.State.On.Stream)
		default:
			continue
		}
		for _, l := range r.Lookups {
			tableOf(l.Stream)
		}
		p.evaluators = append(p.evaluators, ev)
	}
	p.ordered = append(p.ordered, orderedPrefix{prefix: statekey.IndexResolved}, orderedPrefix{prefix: statekey.IndexForget})
	for _, ev := range p.evaluators {
		for _, prefix := range ev.duePrefixes() {
			p.ordered = append(p.ordered, orderedPrefix{prefix: prefix})
		}
	}
	if err := p.load(snap); err != nil {
		return nil, fmt.Errorf("load partition %d: %w", id, err)
	}
	return p, nil
}

func (r *route) addSide(s sideRef) { r.sides = append(r.sides, s) }

// ID returns the partition number.
func (p *Partition) ID() int32 { return p.id }

// Topics returns the topics the rules read.
func (p *Partition) Topics() []string {
	out := make([]string, 0, len(p.routes))
	for t := range p.routes {
		out = append(out, t)
	}
	return out
}

// load reads what a partition keeps outside its keyed state: each stream's
// newest event time and the counters. Everything else is read on demand, so
// a partition is ready as soon as this returns, whatever its state size.
func (p *Partition) load(Snapshot) error {
	for name, st := range p.streams {
		if v, ok := p.get(statekey.Stream + name); ok && len(v) == 8 {
			st.maxEventTime = statekey.Time(v)
		}
	}
	for _, ev := range p.evaluators {
		ev.load()
	}
	return p.err
}

// SetCaughtUp tells the partition whether its input on topic has reached the
// topic-partition's high-water mark; only a caught-up input can be idle.
func (p *Partition) SetCaughtUp(topic string, caughtUp bool) {
	for _, r := range p.routes[topic] {
		r.stream.caughtUp = caughtUp
	}
}

// Apply decodes one record and applies it to every rule that reads its
// topic. A record that cannot be decoded or evaluated returns a *DecodeError
// and changes nothing. A record whose schema cannot be fetched returns an
// error wrapping rules.ErrSchemaUnavailable and changes nothing: the caller
// must apply it again later, before any record after it on its partition. A
// panic while applying it returns a *PanicError: the partition's state may
// then be half-changed and must be reloaded.
func (p *Partition) Apply(rec *Record, now time.Time) (err error) {
	routes := p.routes[rec.Topic]
	if len(routes) == 0 {
		return nil
	}
	mutating := false
	defer func() {
		if r := recover(); r != nil {
			err = p.panicked(rec.Topic, r, mutating)
		}
	}()
	if len(rec.Value) > MaxValueBytes {
		return p.reject(rec.Topic, &DecodeError{Reason: ReasonOversized, Err: fmt.Errorf("value of %d bytes exceeds %d", len(rec.Value), MaxValueBytes)})
	}
	// Keys scope partitions and reach CEL as record.key, a string: a key
	// that is not UTF-8 was written by something that is not the domain's
	// producer.
	if !utf8.Valid(rec.Key) {
		return p.reject(rec.Topic, &DecodeError{Reason: ReasonBadKeyBytes, Err: fmt.Errorf("record key is not UTF-8")})
	}
	ev, err := p.dec.Decode(rec.Topic, rec.Partition, rec.Offset, rec.Key, rec.Value, rec.Timestamp)
	if err != nil {
		if errors.Is(err, rules.ErrSchemaUnavailable) {
			// Not the record's fault: the caller retries it later.
			return fmt.Errorf("decode %s[%d]@%d: %w", rec.Topic, rec.Partition, rec.Offset, err)
		}
		reason := ReasonMalformed
		var r interface{ Reason() string }
		if errors.As(err, &r) {
			reason = r.Reason()
		}
		return p.reject(rec.Topic, &DecodeError{Reason: reason, Err: err})
	}
	// Ids, keys and other strings read from the record share its decode
	// buffer (EvalTransient) and are valid until the next Decode: whatever
	// outlives this call copies them (state values are encoded, state keys
	// built, violations clone theirs in ruleBase.open).
	p.matches = p.matches[:0]
	src := violation.Source{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}
	type stamped struct {
		r   *route
		id  string
		key string
		t   time.Time
	}
	var times [4]stamped
	seen := times[:0]
	for _, r := range routes {
		st := r.stream
		id, err := st.s.ID.EvalTransient(ev)
		if err != nil {
			return p.reject(rec.Topic, &DecodeError{Reason: ReasonBadID, Stream: st.s.Name, Err: err})
		}
		t, err := st.s.Time.Eval(ev)
		if err == nil {
			// Checked here, where every format's event time is produced, so
			// no time outside the bounds reaches a watermark or the state.
			err = p.bounds.check(t, now)
		}
		if err != nil {
			return p.reject(rec.Topic, &DecodeError{Reason: ReasonBadTime, Stream: st.s.Name, Err: err})
		}
		var key string
		if r.table != nil {
			if key, err = st.s.Key.EvalTransient(ev); err != nil {
				return p.reject(rec.Topic, &DecodeError{Reason: ReasonBadKey, Stream: st.s.Name, Err: err})
			}
		}
		if !utf8.ValidString(id) || !utf8.ValidString(key) {
			return p.reject(rec.Topic, &DecodeError{Reason: ReasonNotUTF8, Stream: st.s.Name, Err: fmt.Errorf("id %q or key %q is not valid UTF-8", id, key)})
		}
		seen = append(seen, stamped{r, id, key, t})
		for i := range r.sides {
			ref := &r.sides[i]
			rule := ref.ev.base()
			ev.Lookups = nil
			if rule.resolver != nil {
				ev.Lookups = rule.resolver
			}
			ok, err := ref.side.Condition.Eval(ev)
			if err != nil {
				return p.reject(rec.Topic, &DecodeError{Reason: ReasonBadCondition, Stream: st.s.Name, Rule: rule.rule.Name, Err: err})
			}
			if !ok {
				continue
			}
			key, err := ref.side.Key.EvalTransient(ev)
			if err != nil {
				return p.reject(rec.Topic, &DecodeError{Reason: ReasonBadKey, Stream: st.s.Name, Rule: rule.rule.Name, Err: err})
			}
			// The match is built in place in p.matches: a local one escaped
			// to the heap through extract, an allocation per match. A record
			// rejected below leaves it there, and the next Apply resets
			// p.matches before anything reads it.
			p.matches = append(p.matches, match{ref: ref, key: key, eventID: id, time: t, src: src, raw: rec.Value})
			m := &p.matches[len(p.matches)-1]
			if ref.role == roleTrigger {
				if m.impact, m.customer, err = rule.impact(ev); err != nil {
					return p.reject(rec.Topic, &DecodeError{Reason: ReasonBadImpact, Stream: st.s.Name, Rule: rule.rule.Name, Err: err})
				}
			}
			if err := ref.ev.extract(ev, ref, m); err != nil {
				return p.reject(rec.Topic, &DecodeError{Reason: ReasonBadField, Stream: st.s.Name, Rule: rule.rule.Name, Err: err})
			}
			if de := m.validate(p.bounds); de != nil {
				de.Stream, de.Rule = st.s.Name, rule.rule.Name
				return p.reject(rec.Topic, de)
			}
		}
	}
	ev.Lookups = nil
	mutating = true
	// Everything decoded: now apply. Tables first, so a rule reading its own
	// stream's latest entity sees this event.
	for _, s := range seen {
		st := s.r.stream
		if wm := st.watermark(); !wm.IsZero() && s.t.Before(wm) {
			st.late.Inc()
		}
		if s.t.After(st.maxEventTime) {
			st.maxEventTime = s.t
			st.dirty = true
		}
		st.lastEventAt = now
		st.consumed.Inc()
		if s.r.table != nil {
			p.tablePut(s.r.table, s.key, s.id, s.t, rec.Value)
		}
	}
	for i := range p.matches {
		m := &p.matches[i]
		m.ref.ev.apply(m, now)
	}
	return nil
}

func (p *Partition) reject(topic string, err *DecodeError) error {
	p.metrics.DecodeErrors.WithLabelValues(topic, err.Reason).Inc()
	return err
}

// Advance moves every rule's watermark to what the inputs and the clock
// allow and records a violation for every expectation whose deadline the
// watermark has passed.
func (p *Partition) Advance(now time.Time) {
	for _, ev := range p.evaluators {
		ev.advance(now)
	}
	p.expireViolations(now)
}

// Watermark returns the event-time watermark of a rule on this partition;
// the zero time when the rule has no input yet.
func (p *Partition) Watermark(rule string) time.Time {
	for _, ev := range p.evaluators {
		if b := ev.base(); b.rule.Name == rule {
			return b.wm
		}
	}
	return time.Time{}
}

// Blind returns, per stream, how far it lags behind another input of one of
// its rules in event time, for the streams lagging beyond their max_lag.
func (p *Partition) Blind() map[string]time.Duration {
	var out map[string]time.Duration
	for _, ev := range p.evaluators {
		for st, lag := range ev.base().blind() {
			if out == nil {
				out = map[string]time.Duration{}
			}
			out[st.s.Name] = max(out[st.s.Name], lag)
		}
	}
	return out
}

// MinWatermark returns the lowest watermark of any rule on this partition;
// the zero time when a rule has none yet.
func (p *Partition) MinWatermark() time.Time {
	var min time.Time
	for i, ev := range p.evaluators {
		if wm := ev.base().wm; i == 0 || wm.Before(min) {
			min = wm
		}
	}
	return min
}

// PendingCount returns how many expectations wait for their deadline.
func (p *Partition) PendingCount() int {
	n := 0
	for _, ev := range p.evaluators {
		n += ev.pending()
	}
	return n
}

// TakeDelta returns the durable changes since the last call and starts a new
// delta. The caller writes them, with the applied offsets, in one batch, and
// marks the delta durable once that write is synced; it may then Recycle it.
func (p *Partition) TakeDelta() *Delta {
	for name, st := range p.streams {
		if st.dirty {
			p.delta.set(statekey.Stream+name, Op{Value: statekey.TimeBytes(st.maxEventTime)}, false)
			st.dirty = false
		}
	}
	for _, c := range p.counters {
		if c.dirty {
			p.delta.set(c.key, Op{Value: binary.AppendVarint(nil, c.n)}, false)
			c.dirty = false
		}
	}
	d := p.delta
	var spare *Delta
	p.inflight = slices.DeleteFunc(p.inflight, func(d *Delta) bool {
		if !d.durable.Load() {
			return false
		}
		if d.recyclable.Load() {
			spare = d
		}
		return true
	})
	p.delta = reuse(spare, len(d.Ops))
	if len(d.Ops) > 0 {
		p.inflight = append(p.inflight, d)
	}
	// After the durable deltas are dropped above, never before: the next
	// view must reflect each of them.
	p.releaseView()
	return d
}

// Close ends the partition's read view of its durable state; call it when
// dropping a partition, so the store does not keep versions for it.
func (p *Partition) Close() { p.releaseView() }

func (p *Partition) releaseView() {
	if v, ok := p.snap.(ViewSnapshot); ok {
		v.Release()
	}
}

// Live returns how many state entries the partition's rules keep: pending
// expectations and buffered events, and the entries of unique rules.
func (p *Partition) Live() int64 {
	var n int64
	for _, c := range p.counters {
		n += c.n
	}
	return n
}

// checkRuleIDs refuses a rule set in which two rules' state would share a
// key prefix: their names have the same id.
func checkRuleIDs(rs []*rules.Rule, id func(string) string) error {
	names := make(map[string]string, len(rs))
	for _, r := range rs {
		k := id(r.Name)
		if other, ok := names[k]; ok && other != r.Name {
			return fmt.Errorf("rules %q and %q have the same state key id: rename one of them", other, r.Name)
		}
		names[k] = r.Name
	}
	return nil
}
