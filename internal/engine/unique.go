package engine

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/statekey"
)

// unique evaluates one unique rule on one partition: two events with the
// same key and different ids within the window are a duplicate effect. Of
// each pair the later one by (event time, id) is the duplicate, decided the
// same whichever of the two is read first, so replays agree.
//
// State, under r/<rule id>/:
//
//	U/<key>                     the entries of key in the window (usually one)
//	u/<event time><key>\x00<id> expiry index, empty
//	n                           how many entries are live
type unique struct {
	ruleBase
	spec *rules.Unique
	n    *counter

	events     prometheus.Counter
	duplicates prometheus.Counter
}

func newUnique(p *Partition, r *rules.Rule) *unique {
	u := &unique{
		ruleBase:   newRuleBase(p, r),
		spec:       r.Unique,
		events:     p.metrics.UniqueEvents.WithLabelValues(r.Name),
		duplicates: p.metrics.UniqueDuplicates.WithLabelValues(r.Name),
	}
	if r.Objective > 0 {
		p.metrics.UniqueObjective.WithLabelValues(r.Name).Set(r.Objective)
	}
	return u
}

func before(a, b *trigger) bool {
	if !a.EventTime.Equal(b.EventTime) {
		return a.EventTime.Before(b.EventTime)
	}
	return a.EventID < b.EventID
}

func (u *unique) entriesKey(key string) string { return u.key("U", key) }
func (u *unique) expiryPrefix() string         { return u.key("u", "") }

func (u *unique) load() {
	u.n = u.p.newCounter(u.prefix + "n")
	u.pendingGauge.Set(float64(u.n.n))
}

func (u *unique) duePrefixes() []string { return []string{u.expiryPrefix()} }

func (u *unique) pending() int { return 0 }

func (u *unique) extract(*rules.Event, *sideRef, *match) error { return nil }

func (u *unique) entries(key string) ([]trigger, bool) {
	b, ok := u.p.get(u.entriesKey(key))
	if !ok {
		return nil, false
	}
	var out []trigger
	d := dec{b: b}
	for d.more() {
		out = append(out, d.trigger())
	}
	if d.err != nil {
		u.p.fail(fmt.Errorf("rule %s: unique entries of %q: %w", u.rule.Name, key, d.err))
	}
	return out, true
}

func (u *unique) putEntries(key string, list []trigger, absent bool) {
	if len(list) == 0 {
		u.p.del(u.entriesKey(key))
		return
	}
	size := 0
	for i := range list {
		size += triggerSize(&list[i])
	}
	e := make(enc, 0, size)
	for i := range list {
		e = e.trigger(&list[i])
	}
	u.p.put(u.entriesKey(key), e, absent)
}

func (u *unique) apply(m *match, now time.Time) {
	list, existed := u.entries(m.key)
	for _, e := range list {
		if e.EventID == m.eventID {
			return // the same event again: a redelivery, not a second effect
		}
	}
	e := m.trigger()
	u.events.Inc()
	u.judged()
	for i := range list {
		o := &list[i]
		d := e.EventTime.Sub(o.EventTime)
		if d < -u.spec.Window || d > u.spec.Window {
			continue
		}
		dup, first := &e, o
		if before(&e, o) {
			dup, first = o, &e
		}
		if u.ruleBase.open(*dup, dup.EventTime, now, "duplicate of event "+first.EventID) != nil {
			u.duplicates.Inc()
		}
	}
	u.putEntries(m.key, append(list, e), !existed)
	u.p.put(u.timeKey("u", e.EventTime, e.Key, true, e.EventID), nil, true)
	u.n.add(1)
}

func (u *unique) advance(now time.Time) {
	wm := u.computeWatermark(now)
	if wm.IsZero() {
		return
	}
	// An entry older than the window behind the watermark can pair with no
	// on-time event any more: expiry is a range scan of the time index.
	prefix := u.expiryPrefix()
	u.p.scanDue(prefix, prefix+string(statekey.TimeBytes(wm.Add(-u.spec.Window))), func(k string, _ []byte) bool {
		rest := k[len(prefix)+8:]
		key, id, ok := statekey.CutLast(rest)
		if !ok {
			u.p.fail(fmt.Errorf("rule %s: corrupt expiry key %q", u.rule.Name, k))
			return false
		}
		u.p.del(k)
		list, _ := u.entries(key)
		keep := list[:0]
		for _, e := range list {
			if e.EventID != id {
				keep = append(keep, e)
			}
		}
		u.putEntries(key, keep, false)
		u.n.add(-1)
		return true
	})
	u.pendingGauge.Set(float64(u.n.n))
}
