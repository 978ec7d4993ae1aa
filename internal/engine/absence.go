package engine

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/violation"
)

// absence evaluates one absence rule on one partition: every event matching
// `when` must meet an event matching `expect` with the same join key, no
// earlier than `lookback` before it and no later than `within` after it.
//
// Inputs arrive from different topic-partitions in no particular order, so
// both sides are remembered: pending triggers wait for their deadline, and
// seen expect events wait for triggers that are read after them.
type absence struct {
	ruleBase
	spec   *rules.Absence
	when   *streamState
	expect *streamState

	pend     map[string][]*pending
	npending int
	queue    deadlineQueue
	seen     map[string][]*seenEvent
	seenQ    seenQueue
	// open indexes open violations by join key, for resolution.
	open map[string][]string
}

// pending is a trigger waiting for its expected event.
type pending struct {
	Key       string           `json:"key"`
	EventID   string           `json:"event_id"`
	EventTime time.Time        `json:"event_time"`
	Deadline  time.Time        `json:"deadline"`
	Impact    float64          `json:"impact"`
	Customer  string           `json:"customer,omitempty"`
	Source    violation.Source `json:"source"`

	gen  uint64
	done bool
}

// seenEvent is an expect event remembered for triggers read after it.
type seenEvent struct {
	key  string
	time time.Time
	gen  uint64
	// triggers are the ids of the triggers this event satisfied: a trigger
	// redelivered later is recognised and not judged a second time.
	triggers []string
}

// satisfied reports whether the trigger with id was judged met by s.
func (s *seenEvent) satisfied(id string) bool {
	return slices.Contains(s.triggers, id)
}

func newAbsence(p *Partition, r *rules.Rule) *absence {
	return &absence{
		ruleBase: newRuleBase(p, r),
		spec:     r.Absence,
		when:     p.streams[r.Absence.When.Stream.Name],
		expect:   p.streams[r.Absence.Expect.Stream.Name],
		pend:     map[string][]*pending{},
		seen:     map[string][]*seenEvent{},
		open:     map[string][]string{},
	}
}

func (a *absence) pending() int { return a.npending }

func (a *absence) extract(*rules.Event, *sideRef, *match) error { return nil }

func (a *absence) apply(m *match, now time.Time) {
	if m.ref.role == roleExpect {
		a.onExpect(m.key, m.time, now)
	} else {
		a.onWhen(m)
	}
}

func (a *absence) load(snap Snapshot) error {
	base := prefixRule + a.rule.Name
	err := snap.Scan(base+"/d/", func(_ string, v []byte) error {
		pd := &pending{}
		if err := json.Unmarshal(v, pd); err != nil {
			return fmt.Errorf("decode pending expectation: %w", err)
		}
		a.addPending(pd)
		return nil
	})
	if err != nil {
		return err
	}
	err = snap.Scan(base+"/s/", func(k string, v []byte) error {
		rest := k[len(base)+len("/s/"):]
		if len(rest) < 8 {
			return fmt.Errorf("corrupt seen key %q", k)
		}
		s := &seenEvent{key: rest[8:], time: bytesTime([]byte(rest[:8]))}
		if len(v) > 0 {
			s.triggers = strings.Split(string(v), "\x00")
		}
		a.seen[s.key] = append(a.seen[s.key], s)
		heap.Push(&a.seenQ, s)
		return nil
	})
	if err != nil {
		return err
	}
	for _, v := range a.p.violations {
		if v.Rule == a.rule.Name && v.State == violation.Open {
			a.open[v.Key] = append(a.open[v.Key], v.ID)
		}
	}
	a.pendingGauge.Set(float64(a.npending))
	return nil
}

// satisfies reports whether an expect event at t fulfils a trigger at trig.
func (a *absence) satisfies(t, trig time.Time) bool {
	return !t.Before(trig.Add(-a.spec.Lookback)) && !t.After(trig.Add(a.spec.Within))
}

func (a *absence) onWhen(m *match) {
	for _, s := range a.seen[m.key] {
		if s.satisfied(m.eventID) {
			return // redelivery of a trigger already met
		}
	}
	for _, s := range a.seen[m.key] {
		if a.satisfies(s.time, m.time) {
			a.met(s, m.eventID)
			a.p.put(seenKey(a.rule.Name, s.time, s.key), encodeTriggers(s.triggers))
			return
		}
	}
	for _, pd := range a.pend[m.key] {
		if pd.EventID == m.eventID {
			return // redelivery of a trigger already waiting
		}
	}
	if _, ok := a.p.violations[violation.ID(a.rule.Name, a.rule.Version, m.key, m.eventID)]; ok {
		return // redelivery of a trigger already judged
	}
	pd := &pending{
		Key: m.key, EventID: m.eventID, EventTime: m.time, Deadline: m.time.Add(a.spec.Within),
		Impact: m.impact, Customer: m.customer, Source: m.src, gen: a.p.gen,
	}
	a.addPending(pd)
	b, err := json.Marshal(pd)
	if err != nil {
		panic(fmt.Sprintf("encode pending expectation: %v", err))
	}
	a.p.put(deadlineKey(a.rule.Name, pd.Deadline, pd.Key, pd.EventID), b)
}

func (a *absence) addPending(pd *pending) {
	a.pend[pd.Key] = append(a.pend[pd.Key], pd)
	heap.Push(&a.queue, pd)
	a.npending++
}

func (a *absence) dropPending(pd *pending) {
	pd.done = true
	a.npending--
	a.p.remove(deadlineKey(a.rule.Name, pd.Deadline, pd.Key, pd.EventID), pd.gen)
}

// met records that the expect event s satisfied the trigger id: one check
// passed.
func (a *absence) met(s *seenEvent, id string) {
	s.triggers = append(s.triggers, id)
	a.judged()
}

func encodeTriggers(ids []string) []byte { return []byte(strings.Join(ids, "\x00")) }

func (a *absence) onExpect(key string, t, now time.Time) {
	var seen *seenEvent
	for _, s := range a.seen[key] {
		if s.time.Equal(t) {
			seen = s // a redelivery: remembered already
			break
		}
	}
	if seen == nil {
		seen = &seenEvent{key: key, time: t, gen: a.p.gen}
		a.seen[key] = append(a.seen[key], seen)
		heap.Push(&a.seenQ, seen)
		a.p.put(seenKey(a.rule.Name, t, key), nil)
	}
	if list := a.pend[key]; len(list) > 0 {
		keep := list[:0]
		for _, pd := range list {
			if a.satisfies(t, pd.EventTime) {
				a.dropPending(pd)
				a.met(seen, pd.EventID)
				a.p.put(seenKey(a.rule.Name, t, key), encodeTriggers(seen.triggers))
			} else {
				keep = append(keep, pd)
			}
		}
		if len(keep) == 0 {
			delete(a.pend, key)
		} else {
			a.pend[key] = keep
		}
	}
	if ids := a.open[key]; len(ids) > 0 {
		keep := ids[:0]
		for _, id := range ids {
			v := a.p.violations[id]
			if t.Before(v.EventTime.Add(-a.spec.Lookback)) {
				keep = append(keep, id)
				continue
			}
			a.resolve(v, t, now)
		}
		if len(keep) == 0 {
			delete(a.open, key)
		} else {
			a.open[key] = keep
		}
	}
}

func (a *absence) advance(now time.Time) {
	a.computeWatermark(now)
	for a.queue.Len() > 0 && a.queue[0].Deadline.Before(a.wm) {
		pd := heap.Pop(&a.queue).(*pending)
		if pd.done {
			continue
		}
		a.removeFromPending(pd)
		a.dropPending(pd)
		a.fire(pd, now)
	}
	// Forget expect events no trigger can use any more: an on-time trigger
	// is no older than the watermark, and one that is late by up to `within`
	// still finds them.
	horizon := a.spec.Lookback + a.spec.Within + a.spec.RedeliveryWindow
	for a.seenQ.Len() > 0 && a.seenQ[0].time.Add(horizon).Before(a.wm) {
		s := heap.Pop(&a.seenQ).(*seenEvent)
		list := a.seen[s.key]
		for i, x := range list {
			if x == s {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(a.seen, s.key)
		} else {
			a.seen[s.key] = list
		}
		a.p.remove(seenKey(a.rule.Name, s.time, s.key), s.gen)
	}
	a.pendingGauge.Set(float64(a.npending))
}

func (a *absence) removeFromPending(pd *pending) {
	list := a.pend[pd.Key]
	for i, x := range list {
		if x == pd {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(a.pend, pd.Key)
	} else {
		a.pend[pd.Key] = list
	}
}

func (a *absence) fire(pd *pending, now time.Time) {
	t := trigger{Key: pd.Key, EventID: pd.EventID, EventTime: pd.EventTime, Impact: pd.Impact, Customer: pd.Customer, Source: pd.Source}
	v := a.ruleBase.open(t, pd.Deadline, now, "")
	if v == nil {
		return
	}
	a.judged()
	// The expected event may already have been read, too late: then the
	// violation happened and is already repaired. It is recorded resolved.
	var late *seenEvent
	for _, s := range a.seen[pd.Key] {
		if !s.time.Before(pd.EventTime.Add(-a.spec.Lookback)) && (late == nil || s.time.Before(late.time)) {
			late = s
		}
	}
	if late != nil {
		a.resolve(v, late.time, now)
		return
	}
	a.open[pd.Key] = append(a.open[pd.Key], v.ID)
}

// deadlineQueue orders pending triggers by deadline.
type deadlineQueue []*pending

func (q deadlineQueue) Len() int { return len(q) }
func (q deadlineQueue) Less(i, j int) bool {
	if !q[i].Deadline.Equal(q[j].Deadline) {
		return q[i].Deadline.Before(q[j].Deadline)
	}
	if q[i].Key != q[j].Key {
		return q[i].Key < q[j].Key
	}
	return q[i].EventID < q[j].EventID
}
func (q deadlineQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *deadlineQueue) Push(x any)   { *q = append(*q, x.(*pending)) }
func (q *deadlineQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// seenQueue orders remembered expect events by event time, for expiry.
type seenQueue []*seenEvent

func (q seenQueue) Len() int           { return len(q) }
func (q seenQueue) Less(i, j int) bool { return q[i].time.Before(q[j].time) }
func (q seenQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *seenQueue) Push(x any)        { *q = append(*q, x.(*seenEvent)) }
func (q *seenQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
