package engine

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/invmon/invmon/internal/rules"
)

// stateRule evaluates one state rule on one partition: a condition over an
// entity's latest event (and the latest events of its lookups) that must not
// still hold at a deadline taken from the data (`until`), or must not hold
// for longer than `for`. The condition is checked again when the watermark
// passes the deadline, against what is known then, so a repair that arrived
// in time prevents the violation.
type stateRule struct {
	ruleBase
	spec   *rules.StateRule
	table  *table
	checks checkQueue
	// byKey indexes the live checks per entity, so a newer event can
	// supersede them.
	byKey map[string][]*check
	// streak is when the condition began to hold, per entity (`for` rules).
	streak map[string]time.Time
	open   map[string]string
	dec    rules.Decoder
}

// check is a deadline at which an entity's condition is evaluated again.
type check struct {
	trigger
	Deadline time.Time `json:"deadline"`
	// Raw is the event the condition held on: at the deadline the condition
	// is judged on the entity as it was then, even if a later event (after
	// the deadline) has been read since.
	Raw  []byte `json:"raw"`
	gen  uint64
	done bool
}

func newStateRule(p *Partition, r *rules.Rule) *stateRule {
	return &stateRule{
		ruleBase: newRuleBase(p, r),
		dec:      rules.NewDecoder(p.set),
		spec:     r.State,
		streak:   map[string]time.Time{},
		open:     map[string]string{},
		byKey:    map[string][]*check{},
	}
}

func (s *stateRule) checkKey(c *check) string {
	return prefixRule + s.rule.Name + "/d/" + string(timeBytes(c.Deadline)) + c.Key + "\x00" + c.EventID
}

func (s *stateRule) streakKey(key string) string { return prefixRule + s.rule.Name + "/k/" + key }

func (s *stateRule) pending() int { return s.checks.Len() }

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

func (s *stateRule) load(snap Snapshot) error {
	s.table = s.p.tables[s.spec.On.Stream.Name]
	base := prefixRule + s.rule.Name
	err := snap.Scan(base+"/d/", func(_ string, v []byte) error {
		c := &check{}
		if err := json.Unmarshal(v, c); err != nil {
			return fmt.Errorf("decode state check: %w", err)
		}
		s.schedule(c)
		return nil
	})
	if err != nil {
		return err
	}
	err = snap.Scan(base+"/k/", func(k string, v []byte) error {
		if len(v) == 8 {
			s.streak[k[len(base)+3:]] = bytesTime(v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, v := range s.p.violations {
		if v.Rule == s.rule.Name && v.State == "open" {
			s.open[v.Key] = v.ID
		}
	}
	return nil
}

func (s *stateRule) schedule(c *check) {
	heap.Push(&s.checks, c)
	s.byKey[c.Key] = append(s.byKey[c.Key], c)
}

func (s *stateRule) unschedule(c *check) {
	c.done = true
	s.p.remove(s.checkKey(c), c.gen)
	list := s.byKey[c.Key]
	for i, x := range list {
		if x == c {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.byKey, c.Key)
	} else {
		s.byKey[c.Key] = list
	}
}

func (s *stateRule) apply(m *match, now time.Time) {
	// An event before a check's deadline replaces the state the check was
	// about: that check is moot, and this event decides what comes next.
	// It passes that check unless it restates the same deadline (a retried
	// write, or a `for` streak going on): then the new check carries it.
	for _, c := range append([]*check(nil), s.byKey[m.key]...) {
		if c.EventTime.Before(m.time) && !m.time.After(c.Deadline) {
			s.unschedule(c)
			if !m.holds || (s.spec.Until != nil && !m.deadline.Equal(c.Deadline)) {
				s.judged()
			}
		}
	}
	if !m.holds {
		if _, ok := s.streak[m.key]; ok {
			delete(s.streak, m.key)
			s.p.delta.Ops[s.streakKey(m.key)] = Op{Delete: true}
		}
		s.resolve(m.key, m.time, now)
		return
	}
	deadline := m.deadline
	if s.spec.Until == nil {
		start, ok := s.streak[m.key]
		if !ok || m.time.Before(start) {
			start = m.time
			s.streak[m.key] = start
			s.p.put(s.streakKey(m.key), timeBytes(start))
		}
		deadline = start.Add(s.spec.For)
	} else if deadline.After(s.wm) {
		// The condition is stated anew with a deadline still ahead (a renewed
		// entitlement): whatever was wrong before is repaired.
		s.resolve(m.key, m.time, now)
	}
	// An event read out of order, already replaced before its deadline by a
	// newer one, needs no check.
	if e := s.table.get(m.key); e != nil && e.time.After(m.time) && !e.time.After(deadline) {
		return
	}
	for _, c := range s.byKey[m.key] {
		if c.EventID == m.eventID {
			return // a redelivery of an event whose check is scheduled
		}
	}
	c := &check{trigger: m.trigger(), Deadline: deadline, Raw: append([]byte(nil), m.raw...), gen: s.p.gen}
	s.schedule(c)
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("encode state check: %v", err))
	}
	s.p.put(s.checkKey(c), b)
}

func (s *stateRule) resolve(key string, by, now time.Time) {
	if id, ok := s.open[key]; ok {
		delete(s.open, key)
		s.ruleBase.resolve(s.p.violations[id], by, now)
	}
}

func (s *stateRule) advance(now time.Time) {
	wm := s.computeWatermark(now)
	for s.checks.Len() > 0 && s.checks[0].Deadline.Before(wm) {
		if c := s.checks[0]; !c.done && s.schemaUnavailable(c.Raw) {
			// The stored event's schema cannot be fetched now (a registry
			// outage after a restart): judge it on a later tick rather
			// than drop it.
			break
		}
		c := heap.Pop(&s.checks).(*check)
		if c.done {
			continue
		}
		s.unschedule(c)
		s.evaluate(c, now)
	}
	s.pendingGauge.Set(float64(len(s.byKey)))
}

// evaluate judges a check whose deadline the watermark passed: nothing
// replaced the entity's state before the deadline, so if the condition still
// holds on that state (with lookups as known now) it is a violation. An
// event after the deadline may already have repaired it.
func (s *stateRule) evaluate(c *check, now time.Time) {
	s.judged()
	if _, ok := s.open[c.Key]; ok {
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
	s.open[c.Key] = v.ID
	if latest := s.table.get(c.Key); latest != nil && latest.time.After(c.Deadline) {
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

type checkQueue []*check

func (q checkQueue) Len() int           { return len(q) }
func (q checkQueue) Less(i, j int) bool { return q[i].Deadline.Before(q[j].Deadline) }
func (q checkQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *checkQueue) Push(x any)        { *q = append(*q, x.(*check)) }
func (q *checkQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
