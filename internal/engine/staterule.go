package engine

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/statekey"
)

// stateRule evaluates one state rule on one partition: a condition over an
// entity's latest event (and the latest events of its lookups) that must not
// still hold at a deadline taken from the data (`until`), or must not hold
// for longer than `for`. The condition is checked again when the watermark
// passes the deadline, against what is known then, so a repair that arrived
// in time prevents the violation.
//
// State, under r/<rule id>/:
//
//	d/<deadline><key>\x00<event id> a check: due = range scan
//	c/<key>                         the live checks of key (deadline, event time, id)
//	k/<key>                         when the condition began to hold (`for` rules)
//	O/<key>                         the entity's open violation
//	n                               how many entities have live checks
type stateRule struct {
	ruleBase
	spec  *rules.StateRule
	table *table
	n     *counter
	dec   rules.Decoder
}

// check is a deadline at which an entity's condition is evaluated again.
type check struct {
	trigger
	Deadline time.Time
	// Raw is the event the condition held on: at the deadline the condition
	// is judged on the entity as it was then, even if a later event (after
	// the deadline) has been read since.
	Raw []byte
}

// checkRef is what the per-entity list keeps of a check.
type checkRef struct {
	deadline, eventTime time.Time
	id                  string
}

func newStateRule(p *Partition, r *rules.Rule) *stateRule {
	return &stateRule{ruleBase: newRuleBase(p, r), spec: r.State, dec: rules.NewDecoder(p.set)}
}

func (s *stateRule) checkKey(deadline time.Time, key, id string) string {
	return s.timeKey("d", deadline, key, true, id)
}

func (s *stateRule) duePrefixes() []string { return []string{s.key("d", "")} }

func (s *stateRule) pending() int { return int(s.n.n) }

func (s *stateRule) extract(ev *rules.Event, _ *sideRef, m *match) error {
	ok, err := s.spec.Condition.Eval(ev)
	if err != nil {
		return fmt.Errorf("condition: %w", err)
	}
	m.holds = ok
	if ok && s.spec.Until != nil {
		if m.deadline, err = s.spec.Until.Eval(ev); err != nil {
			return fmt.Errorf("until: %w", err)
		}
	}
	return nil
}

func (s *stateRule) load() {
	s.table = s.p.tables[s.spec.On.Stream.Name]
	s.n = s.p.newCounter(s.prefix + "n")
}

func (s *stateRule) refs(key string) ([]checkRef, bool) {
	b, ok := s.p.get(s.key("c", key))
	if !ok {
		return nil, false
	}
	var out []checkRef
	d := dec{b: b}
	for d.more() {
		out = append(out, checkRef{deadline: d.time(), eventTime: d.time(), id: d.str()})
	}
	if d.err != nil {
		s.p.fail(fmt.Errorf("rule %s: checks of %q: %w", s.rule.Name, key, d.err))
	}
	return out, true
}

func (s *stateRule) putRefs(key string, list []checkRef, existed bool) {
	if len(list) == 0 {
		if existed {
			s.p.del(s.key("c", key))
			s.n.add(-1)
		}
		return
	}
	var e enc
	for _, r := range list {
		e = e.time(r.deadline).time(r.eventTime).str(r.id)
	}
	s.p.put(s.key("c", key), e, !existed)
	if !existed {
		s.n.add(1)
	}
}

func (s *stateRule) openID(key string) (string, bool) {
	b, ok := s.p.get(s.key("O", key))
	return string(b), ok
}

func (s *stateRule) apply(m *match, now time.Time) {
	// An event before a check's deadline replaces the state the check was
	// about: that check is moot, and this event decides what comes next.
	// It passes that check unless it restates the same deadline (a retried
	// write, or a `for` streak going on): then the new check carries it.
	refs, existed := s.refs(m.key)
	keep := refs[:0:0]
	for _, c := range refs {
		if c.eventTime.Before(m.time) && !m.time.After(c.deadline) {
			s.delTimeKey("d", c.deadline, m.key, true, c.id)
			if !m.holds || (s.spec.Until != nil && !m.deadline.Equal(c.deadline)) {
				s.judged()
			}
		} else {
			keep = append(keep, c)
		}
	}
	if len(keep) != len(refs) {
		s.putRefs(m.key, keep, existed)
		existed = len(keep) > 0
	}
	if !m.holds {
		if _, ok := s.p.get(s.key("k", m.key)); ok {
			s.p.del(s.key("k", m.key))
		}
		s.resolve(m.key, m.time, now)
		return
	}
	deadline := m.deadline
	if s.spec.Until == nil {
		start := m.time
		b, ok := s.p.get(s.key("k", m.key))
		if ok && len(b) == 8 && !m.time.Before(statekey.Time(b)) {
			start = statekey.Time(b)
		} else {
			s.p.put(s.key("k", m.key), statekey.TimeBytes(start), !ok)
		}
		deadline = start.Add(s.spec.For)
	} else if deadline.After(s.wm) {
		// The condition is stated anew with a deadline still ahead (a renewed
		// entitlement): whatever was wrong before is repaired.
		s.resolve(m.key, m.time, now)
	}
	// An event read out of order, already replaced before its deadline by a
	// newer one, needs no check.
	if e := s.table.get(s.p, m.key); e != nil && e.time.After(m.time) && !e.time.After(deadline) {
		return
	}
	for _, c := range keep {
		if c.id == m.eventID {
			return // a redelivery of an event whose check is scheduled
		}
	}
	c := &check{trigger: m.trigger(), Deadline: deadline, Raw: m.raw}
	s.putRefs(m.key, append(keep, checkRef{deadline: deadline, eventTime: m.time, id: m.eventID}), existed)
	s.p.put(s.checkKey(deadline, m.key, m.eventID), enc(nil).trigger(&c.trigger).time(c.Deadline).bytes(c.Raw), true)
}

func (s *stateRule) resolve(key string, by, now time.Time) {
	if id, ok := s.openID(key); ok {
		s.p.del(s.key("O", key))
		s.ruleBase.resolve(id, by, now)
	}
}

func (s *stateRule) advance(now time.Time) {
	wm := s.computeWatermark(now)
	if wm.IsZero() {
		return
	}
	dp := s.key("d", "")
	s.p.scanDue(dp, statekey.Until(dp, wm), func(k string, v []byte) bool {
		d := dec{b: bytes.Clone(v)} // the scan lends v for this call only
		c := &check{trigger: d.trigger(), Deadline: d.time(), Raw: d.bytes()}
		if d.err != nil {
			s.p.fail(fmt.Errorf("rule %s: check %q: %w", s.rule.Name, k, d.err))
			return false
		}
		if s.schemaUnavailable(c.Raw) {
			// The stored event's schema cannot be fetched now (a registry
			// outage after a restart): judge it on a later tick rather
			// than drop it.
			return false
		}
		s.p.del(k)
		refs, existed := s.refs(c.Key)
		s.putRefs(c.Key, slices.DeleteFunc(refs, func(r checkRef) bool {
			return r.id == c.EventID && r.deadline.Equal(c.Deadline)
		}), existed)
		s.evaluate(c, now)
		return true
	})
	s.pendingGauge.Set(float64(s.n.n))
}

// evaluate judges a check whose deadline the watermark passed: nothing
// replaced the entity's state before the deadline, so if the condition still
// holds on that state (with lookups as known now) it is a violation. An
// event after the deadline may already have repaired it.
func (s *stateRule) evaluate(c *check, now time.Time) {
	s.judged()
	if _, ok := s.openID(c.Key); ok {
		return // one open violation per entity at a time
	}
	holds, ok := s.holds(c.Raw, c.EventTime)
	if !ok || !holds {
		return
	}
	detail := "still true at " + c.Deadline.UTC().Format(time.RFC3339)
	v := s.ruleBase.open(c.trigger, c.Deadline, now, detail)
	if v == nil {
		return
	}
	s.p.put(s.key("O", c.Key), []byte(v.ID), true)
	if latest := s.table.get(s.p, c.Key); latest != nil && latest.time.After(c.Deadline) {
		if still, ok := s.holds(latest.raw, latest.time); ok && (!still || s.renewed(latest.raw, latest.time)) {
			s.resolve(c.Key, latest.time, now)
		}
	}
}

// schemaUnavailable reports whether a stored event cannot be decoded now
// because its schema cannot be fetched.
func (s *stateRule) schemaUnavailable(raw []byte) bool {
	if !s.dec.NeedsSchema(s.spec.On.Stream.Topic) {
		return false // JSON: nothing to fetch
	}
	_, err := s.dec.Decode(s.spec.On.Stream.Topic, s.p.id, 0, nil, raw, time.Time{})
	return errors.Is(err, rules.ErrSchemaUnavailable)
}

// holds evaluates the rule's filter and condition on a stored event.
func (s *stateRule) holds(raw []byte, at time.Time) (bool, bool) {
	ev, err := s.dec.Decode(s.spec.On.Stream.Topic, s.p.id, 0, nil, raw, at)
	if err != nil {
		return false, false
	}
	ev.Lookups = nil
	if s.resolver != nil {
		ev.Lookups = s.resolver
	}
	if ok, err := s.spec.On.Condition.Eval(ev); err != nil || !ok {
		return false, err == nil
	}
	ok, err := s.spec.Condition.Eval(ev)
	return ok, err == nil
}

// renewed reports whether a stored event states the condition with a
// deadline still ahead of the watermark.
func (s *stateRule) renewed(raw []byte, at time.Time) bool {
	if s.spec.Until == nil {
		return false
	}
	ev, err := s.dec.Decode(s.spec.On.Stream.Topic, s.p.id, 0, nil, raw, at)
	if err != nil {
		return false
	}
	d, err := s.spec.Until.Eval(ev)
	return err == nil && d.After(s.wm)
}
