package engine

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/invmon/invmon/internal/rules"
)

// unique evaluates one unique rule on one partition: two events with the
// same key and different ids within the window are a duplicate effect. Of
// each pair the later one by (event time, id) is the duplicate, decided the
// same whichever of the two is read first, so replays agree.
type unique struct {
	ruleBase
	spec    *rules.Unique
	entries map[string][]*uniqueEntry
	expiry  uniqueQueue
	n       int

	events     prometheus.Counter
	duplicates prometheus.Counter
}

type uniqueEntry struct {
	trigger
	gen uint64
}

func (e *uniqueEntry) before(o *uniqueEntry) bool {
	if !e.EventTime.Equal(o.EventTime) {
		return e.EventTime.Before(o.EventTime)
	}
	return e.EventID < o.EventID
}

func newUnique(p *Partition, r *rules.Rule) *unique {
	u := &unique{
		ruleBase:   newRuleBase(p, r),
		spec:       r.Unique,
		entries:    map[string][]*uniqueEntry{},
		events:     p.metrics.UniqueEvents.WithLabelValues(r.Name),
		duplicates: p.metrics.UniqueDuplicates.WithLabelValues(r.Name),
	}
	if r.Objective > 0 {
		p.metrics.UniqueObjective.WithLabelValues(r.Name).Set(r.Objective)
	}
	return u
}

func uniqueKey(rule string, t time.Time, key, id string) string {
	return prefixRule + rule + "/u/" + string(timeBytes(t)) + key + "\x00" + id
}

func (u *unique) pending() int { return 0 }

func (u *unique) extract(*rules.Event, *sideRef, *match) error { return nil }

func (u *unique) load(snap Snapshot) error {
	return snap.Scan(prefixRule+u.rule.Name+"/u/", func(_ string, v []byte) error {
		e := &uniqueEntry{}
		if err := json.Unmarshal(v, &e.trigger); err != nil {
			return fmt.Errorf("decode unique entry: %w", err)
		}
		u.add(e)
		return nil
	})
}

func (u *unique) add(e *uniqueEntry) {
	u.entries[e.Key] = append(u.entries[e.Key], e)
	heap.Push(&u.expiry, e)
	u.n++
}

func (u *unique) apply(m *match, now time.Time) {
	list := u.entries[m.key]
	for _, e := range list {
		if e.EventID == m.eventID {
			return // the same event again: a redelivery, not a second effect
		}
	}
	e := &uniqueEntry{trigger: m.trigger(), gen: u.p.gen}
	u.events.Inc()
	u.judged()
	for _, o := range list {
		d := e.EventTime.Sub(o.EventTime)
		if d < -u.spec.Window || d > u.spec.Window {
			continue
		}
		dup, first := e, o
		if e.before(o) {
			dup, first = o, e
		}
		if u.ruleBase.open(dup.trigger, dup.EventTime, now, "duplicate of event "+first.EventID) != nil {
			u.duplicates.Inc()
		}
	}
	u.add(e)
	b, err := json.Marshal(e.trigger)
	if err != nil {
		panic(fmt.Sprintf("encode unique entry: %v", err))
	}
	u.p.put(uniqueKey(u.rule.Name, e.EventTime, e.Key, e.EventID), b)
}

func (u *unique) advance(now time.Time) {
	wm := u.computeWatermark(now)
	// An entry older than the window behind the watermark can pair with no
	// on-time event any more.
	for u.expiry.Len() > 0 && u.expiry[0].EventTime.Add(u.spec.Window).Before(wm) {
		e := heap.Pop(&u.expiry).(*uniqueEntry)
		list := u.entries[e.Key]
		for i, x := range list {
			if x == e {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(u.entries, e.Key)
		} else {
			u.entries[e.Key] = list
		}
		u.n--
		u.p.remove(uniqueKey(u.rule.Name, e.EventTime, e.Key, e.EventID), e.gen)
	}
	u.pendingGauge.Set(float64(u.n))
}

type uniqueQueue []*uniqueEntry

func (q uniqueQueue) Len() int           { return len(q) }
func (q uniqueQueue) Less(i, j int) bool { return q[i].before(q[j]) }
func (q uniqueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *uniqueQueue) Push(x any)        { *q = append(*q, x.(*uniqueEntry)) }
func (q *uniqueQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
