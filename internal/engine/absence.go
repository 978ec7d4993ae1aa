package engine

import (
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
// State, under r/<rule>/:
//
//	p/<key>                         pending triggers of key
//	d/<deadline><key>\x00<event id> deadline index, empty: due = range scan
//	S/<key>                         remembered expect events: time, triggers met
//	s/<event time><key>             their expiry index, empty
//	o/<key>                         ids of open violations of key
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

func (a *absence) key(kind, rest string) string {
	return statekey.Rule + a.rule.Name + "/" + kind + "/" + rest
}

func (a *absence) load() {
	a.n = a.p.newCounter(statekey.Rule + a.rule.Name + "/n")
	a.pendingGauge.Set(float64(a.n.n))
}

func (a *absence) pending() int { return int(a.n.n) }

func (a *absence) extract(*rules.Event, *sideRef, *match) error { return nil }

func (a *absence) apply(m *match, now time.Time) {
	if m.ref.role == roleExpect {
		a.onExpect(m.key, m.time, now)
	} else {
		a.onWhen(m)
	}
}

func (a *absence) pendings(key string) ([]pending, bool) {
	b, ok := a.p.get(a.key("p", key))
	if !ok {
		return nil, false
	}
	var out []pending
	d := dec{b: b}
	for d.more() {
		out = append(out, pending{trigger: d.trigger(), Deadline: d.time()})
	}
	if d.err != nil {
		a.p.fail(fmt.Errorf("rule %s: pending of %q: %w", a.rule.Name, key, d.err))
	}
	return out, true
}

func (a *absence) putPendings(key string, list []pending, absent bool) {
	if len(list) == 0 {
		a.p.del(a.key("p", key))
		return
	}
	var e enc
	for i := range list {
		e = e.trigger(&list[i].trigger).time(list[i].Deadline)
	}
	a.p.put(a.key("p", key), e, absent)
}

func (a *absence) deadlineKey(pd *pending) string {
	return a.key("d", string(statekey.TimeBytes(pd.Deadline))+pd.Key+"\x00"+pd.EventID)
}

func (a *absence) seen(key string) ([]seenEvent, bool) {
	b, ok := a.p.get(a.key("S", key))
	if !ok {
		return nil, false
	}
	var out []seenEvent
	d := dec{b: b}
	for d.more() {
		s := seenEvent{time: d.time()}
		for n := d.i64(); n > 0 && d.err == nil; n-- {
			s.triggers = append(s.triggers, d.str())
		}
		out = append(out, s)
	}
	if d.err != nil {
		a.p.fail(fmt.Errorf("rule %s: seen events of %q: %w", a.rule.Name, key, d.err))
	}
	return out, true
}

func (a *absence) putSeen(key string, list []seenEvent, absent bool) {
	if len(list) == 0 {
		a.p.del(a.key("S", key))
		return
	}
	var e enc
	for _, s := range list {
		e = e.time(s.time).i64(int64(len(s.triggers)))
		for _, id := range s.triggers {
			e = e.str(id)
		}
	}
	a.p.put(a.key("S", key), e, absent)
}

func (a *absence) openIDs(key string) []string {
	b, ok := a.p.get(a.key("o", key))
	if !ok {
		return nil
	}
	var out []string
	d := dec{b: b}
	for d.more() {
		out = append(out, d.str())
	}
	return out
}

func (a *absence) putOpenIDs(key string, ids []string) {
	if len(ids) == 0 {
		a.p.del(a.key("o", key))
		return
	}
	var e enc
	for _, id := range ids {
		e = e.str(id)
	}
	a.p.put(a.key("o", key), e, false)
}

// satisfies reports whether an expect event at t fulfils a trigger at trig.
func (a *absence) satisfies(t, trig time.Time) bool {
	return !t.Before(trig.Add(-a.spec.Lookback)) && !t.After(trig.Add(a.spec.Within))
}

func (a *absence) onWhen(m *match) {
	seen, _ := a.seen(m.key)
	for _, s := range seen {
		if slices.Contains(s.triggers, m.eventID) {
			return // redelivery of a trigger already met
		}
	}
	for i := range seen {
		if a.satisfies(seen[i].time, m.time) {
			seen[i].triggers = append(seen[i].triggers, m.eventID)
			a.judged()
			a.putSeen(m.key, seen, false)
			return
		}
	}
	list, existed := a.pendings(m.key)
	for _, pd := range list {
		if pd.EventID == m.eventID {
			return // redelivery of a trigger already waiting
		}
	}
	if a.p.hasViolation(a.rule.Name, a.rule.Version, m.key, m.eventID) {
		return // redelivery of a trigger already judged
	}
	pd := pending{trigger: m.trigger(), Deadline: m.time.Add(a.spec.Within)}
	a.putPendings(m.key, append(list, pd), !existed)
	a.p.put(a.deadlineKey(&pd), nil, true)
	a.n.add(1)
}

func (a *absence) onExpect(key string, t, now time.Time) {
	seen, existed := a.seen(key)
	i := slices.IndexFunc(seen, func(s seenEvent) bool { return s.time.Equal(t) })
	changed := false
	if i < 0 { // else a redelivery: remembered already
		seen = append(seen, seenEvent{time: t})
		i = len(seen) - 1
		changed = true
		a.p.put(a.key("s", string(statekey.TimeBytes(t))+key), nil, true)
	}
	if list, _ := a.pendings(key); len(list) > 0 {
		keep := list[:0]
		for _, pd := range list {
			if a.satisfies(t, pd.EventTime) {
				a.p.del(a.deadlineKey(&pd))
				a.n.add(-1)
				seen[i].triggers = append(seen[i].triggers, pd.EventID)
				a.judged()
				changed = true
			} else {
				keep = append(keep, pd)
			}
		}
		if n := len(keep); n != len(list) {
			a.putPendings(key, keep, false)
		}
	}
	if changed {
		a.putSeen(key, seen, !existed)
	}
	if ids := a.openIDs(key); len(ids) > 0 {
		keep := ids[:0]
		for _, id := range ids {
			v := a.p.getViolation(id)
			if v != nil && t.Before(v.EventTime.Add(-a.spec.Lookback)) {
				keep = append(keep, id)
				continue
			}
			a.resolve(id, t, now)
		}
		if len(keep) != len(ids) {
			a.putOpenIDs(key, keep)
		}
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
		list, _ := a.pendings(key)
		var due *pending
		keep := list[:0]
		for i := range list {
			if list[i].EventID == id && due == nil {
				pd := list[i]
				due = &pd
			} else {
				keep = append(keep, list[i])
			}
		}
		if due == nil {
			return true
		}
		a.putPendings(key, keep, false)
		a.n.add(-1)
		a.fire(due, now)
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
		seen, _ := a.seen(key)
		a.putSeen(key, slices.DeleteFunc(seen, func(s seenEvent) bool { return s.time.Equal(t) }), false)
		return true
	})
	a.pendingGauge.Set(float64(a.n.n))
}

func (a *absence) fire(pd *pending, now time.Time) {
	v := a.ruleBase.open(pd.trigger, pd.Deadline, now, "")
	if v == nil {
		return
	}
	a.judged()
	// The expected event may already have been read, too late: then the
	// violation happened and is already repaired. It is recorded resolved.
	var late time.Time
	found := false
	seen, _ := a.seen(pd.Key)
	for _, s := range seen {
		if !s.time.Before(pd.EventTime.Add(-a.spec.Lookback)) && (!found || s.time.Before(late)) {
			late, found = s.time, true
		}
	}
	if found {
		a.resolve(v.ID, late, now)
		return
	}
	a.putOpenIDs(pd.Key, append(a.openIDs(pd.Key), v.ID))
}
