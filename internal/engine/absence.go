package engine

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/statekey"
)

// absence evaluates one absence rule on one partition: every event matching
// `when` must meet an event matching `expect` with the same join key, no
// earlier than `lookback` before it and no later than `within` after it.
//
// Inputs arrive from different topic-partitions in no particular order, so
// both sides are remembered: pending triggers wait for their deadline, and
// seen expect events wait for triggers that are read after them.
//
// State, under r/<rule id>/:
//
//	k/<key>                         the join key's record (keyRecord): its
//	                                remembered expect events, pending
//	                                triggers and open violations, so an
//	                                event reads one key, not three
//	d/<deadline><key>\x00<event id> deadline index, empty: due = range scan
//	s/<event time><key>             expiry index of expect events, empty
//	n                               how many triggers are pending
type absence struct {
	ruleBase
	spec   *rules.Absence
	when   *streamState
	expect *streamState
	n      *counter
}

// seenEvent is an expect event remembered for triggers read after it.
type seenEvent struct {
	time time.Time
	// triggers are the ids of the triggers this event satisfied: a trigger
	// redelivered later is recognised and not judged a second time.
	triggers []string
}

// pending is a trigger waiting for its expected event.
type pending struct {
	trigger
	Deadline time.Time
}

func newAbsence(p *Partition, r *rules.Rule) *absence {
	return &absence{
		ruleBase: newRuleBase(p, r),
		spec:     r.Absence,
		when:     p.streams[r.Absence.When.Stream.Name],
		expect:   p.streams[r.Absence.Expect.Stream.Name],
	}
}

func (a *absence) load() {
	a.n = a.p.newCounter(a.prefix + "n")
	a.pendingGauge.Set(float64(a.n.n))
}

func (a *absence) duePrefixes() []string { return []string{a.key("d", ""), a.key("s", "")} }

func (a *absence) pending() int { return int(a.n.n) }

func (a *absence) extract(*rules.Event, *sideRef, *match) error { return nil }

func (a *absence) apply(m *match, now time.Time) {
	if m.ref.role == roleExpect {
		a.onExpect(m.key, m.time, now)
	} else {
		a.onWhen(m)
	}
}

// keyRecord is everything an absence rule keeps for one join key.
type keyRecord struct {
	seen    []seenEvent
	pending []pending
	// open lists the ids of the key's open violations.
	open []string
}

func (r *keyRecord) empty() bool { return len(r.seen) == 0 && len(r.pending) == 0 && len(r.open) == 0 }

// record reads the join key's record, and whether it exists.
func (a *absence) record(key string) (keyRecord, bool) {
	var r keyRecord
	b, ok := a.p.get(a.key("k", key))
	if !ok {
		return r, false
	}
	d := dec{b: b}
	for n := d.i64(); n > 0 && d.err == nil; n-- {
		s := seenEvent{time: d.time()}
		for m := d.i64(); m > 0 && d.err == nil; m-- {
			s.triggers = append(s.triggers, d.str())
		}
		r.seen = append(r.seen, s)
	}
	for n := d.i64(); n > 0 && d.err == nil; n-- {
		r.pending = append(r.pending, pending{trigger: d.trigger(), Deadline: d.time()})
	}
	for n := d.i64(); n > 0 && d.err == nil; n-- {
		r.open = append(r.open, d.str())
	}
	if d.err != nil {
		a.p.fail(fmt.Errorf("rule %s: state of %q: %w", a.rule.Name, key, d.err))
	}
	return r, true
}

// putRecord writes the join key's record, or deletes it when empty. absent
// says it exists in no layer (see Partition.put).
func (a *absence) putRecord(key string, r *keyRecord, absent bool) {
	if r.empty() {
		a.p.del(a.key("k", key))
		return
	}
	size := 3 * binary.MaxVarintLen32
	for _, s := range r.seen {
		size += 8 + binary.MaxVarintLen32
		for _, id := range s.triggers {
			size += binary.MaxVarintLen32 + len(id)
		}
	}
	for i := range r.pending {
		size += triggerSize(&r.pending[i].trigger) + 8
	}
	for _, id := range r.open {
		size += binary.MaxVarintLen32 + len(id)
	}
	e := make(enc, 0, size).i64(int64(len(r.seen)))
	for _, s := range r.seen {
		e = e.time(s.time).i64(int64(len(s.triggers)))
		for _, id := range s.triggers {
			e = e.str(id)
		}
	}
	e = e.i64(int64(len(r.pending)))
	for i := range r.pending {
		e = e.trigger(&r.pending[i].trigger).time(r.pending[i].Deadline)
	}
	e = e.i64(int64(len(r.open)))
	for _, id := range r.open {
		e = e.str(id)
	}
	a.p.put(a.key("k", key), e, absent)
}

func (a *absence) deadlineKey(pd *pending) string {
	return a.timeKey("d", pd.Deadline, pd.Key, true, pd.EventID)
}

// satisfies reports whether an expect event at t fulfils a trigger at trig.
func (a *absence) satisfies(t, trig time.Time) bool {
	return !t.Before(trig.Add(-a.spec.Lookback)) && !t.After(trig.Add(a.spec.Within))
}

func (a *absence) onWhen(m *match) {
	r, existed := a.record(m.key)
	for _, s := range r.seen {
		if slices.Contains(s.triggers, m.eventID) {
			return // redelivery of a trigger already met
		}
	}
	for i := range r.seen {
		if a.satisfies(r.seen[i].time, m.time) {
			r.seen[i].triggers = append(r.seen[i].triggers, m.eventID)
			a.judged()
			a.putRecord(m.key, &r, false)
			return
		}
	}
	for _, pd := range r.pending {
		if pd.EventID == m.eventID {
			return // redelivery of a trigger already waiting
		}
	}
	if a.p.hasViolation(a.rule.Name, a.rule.Version, m.key, m.eventID) {
		return // redelivery of a trigger already judged
	}
	pd := pending{trigger: m.trigger(), Deadline: m.time.Add(a.spec.Within)}
	r.pending = append(r.pending, pd)
	a.putRecord(m.key, &r, !existed)
	a.p.put(a.deadlineKey(&pd), nil, true)
	a.n.add(1)
}

func (a *absence) onExpect(key string, t, now time.Time) {
	r, existed := a.record(key)
	i := slices.IndexFunc(r.seen, func(s seenEvent) bool { return s.time.Equal(t) })
	changed := false
	if i < 0 { // else a redelivery: remembered already
		r.seen = append(r.seen, seenEvent{time: t})
		i = len(r.seen) - 1
		changed = true
		a.p.put(a.timeKey("s", t, key, false, ""), nil, true)
	}
	if len(r.pending) > 0 {
		keep := r.pending[:0]
		for _, pd := range r.pending {
			if a.satisfies(t, pd.EventTime) {
				a.delTimeKey("d", pd.Deadline, pd.Key, true, pd.EventID)
				a.n.add(-1)
				r.seen[i].triggers = append(r.seen[i].triggers, pd.EventID)
				a.judged()
				changed = true
			} else {
				keep = append(keep, pd)
			}
		}
		r.pending = keep
	}
	if len(r.open) > 0 {
		keep := r.open[:0]
		for _, id := range r.open {
			v := a.p.getViolation(id)
			if v != nil && t.Before(v.EventTime.Add(-a.spec.Lookback)) {
				keep = append(keep, id)
				continue
			}
			a.resolve(id, t, now)
		}
		if len(keep) != len(r.open) {
			changed = true
		}
		r.open = keep
	}
	if changed {
		a.putRecord(key, &r, !existed)
	}
}

func (a *absence) advance(now time.Time) {
	wm := a.computeWatermark(now)
	if wm.IsZero() {
		return
	}
	// Due triggers are a range scan of the deadline index.
	dp := a.key("d", "")
	a.p.scanDue(dp, statekey.Until(dp, wm), func(k string, _ []byte) bool {
		key, id, ok := statekey.CutLast(k[len(dp)+8:])
		if !ok {
			a.p.fail(fmt.Errorf("rule %s: corrupt deadline key %q", a.rule.Name, k))
			return false
		}
		a.p.del(k)
		r, _ := a.record(key)
		var due *pending
		keep := r.pending[:0]
		for i := range r.pending {
			if r.pending[i].EventID == id && due == nil {
				pd := r.pending[i]
				due = &pd
			} else {
				keep = append(keep, r.pending[i])
			}
		}
		if due == nil {
			return true
		}
		r.pending = keep
		a.n.add(-1)
		a.fire(&r, due, now)
		a.putRecord(key, &r, false)
		return true
	})
	// Forget expect events no trigger can use any more: an on-time trigger
	// is no older than the watermark, and one that is late by up to `within`
	// still finds them.
	horizon := a.spec.Lookback + a.spec.Within + a.spec.RedeliveryWindow
	sp := a.key("s", "")
	a.p.scanDue(sp, statekey.Until(sp, wm.Add(-horizon)), func(k string, _ []byte) bool {
		rest := k[len(sp):]
		t, key := statekey.Time([]byte(rest[:8])), rest[8:]
		a.p.del(k)
		r, _ := a.record(key)
		r.seen = slices.DeleteFunc(r.seen, func(s seenEvent) bool { return s.time.Equal(t) })
		a.putRecord(key, &r, false)
		return true
	})
	a.pendingGauge.Set(float64(a.n.n))
}

// fire records the violation of a due trigger of the key whose record is r
// (the caller writes r back).
func (a *absence) fire(r *keyRecord, pd *pending, now time.Time) {
	v := a.ruleBase.open(pd.trigger, pd.Deadline, now, "")
	if v == nil {
		return
	}
	a.judged()
	// The expected event may already have been read, too late: then the
	// violation happened and is already repaired. It is recorded resolved.
	var late time.Time
	found := false
	for _, s := range r.seen {
		if !s.time.Before(pd.EventTime.Add(-a.spec.Lookback)) && (!found || s.time.Before(late)) {
			late, found = s.time, true
		}
	}
	if found {
		a.resolve(v.ID, late, now)
		return
	}
	r.open = append(r.open, v.ID)
}
