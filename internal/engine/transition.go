package engine

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/invmon/invmon/internal/rules"
)

// transition evaluates one transition rule on one partition. Events are held
// until the watermark passes them and then applied per entity in order (by
// version when the stream has one, else event time), so events reordered
// within the allowed lateness are judged in their true order.
type transition struct {
	ruleBase
	spec     *rules.Transition
	buffer   transitionQueue
	entities map[string]*entityState
	expiry   entityQueue
	stale    prometheus.Counter
}

// transitionEvent is one buffered state change.
type transitionEvent struct {
	trigger
	State      string  `json:"state"`
	Version    float64 `json:"version,omitempty"`
	HasVersion bool    `json:"has_version,omitempty"`
	gen        uint64
}

// entityState is an entity's applied state.
type entityState struct {
	Key        string    `json:"key"`
	State      string    `json:"state"`
	EventID    string    `json:"event_id"`
	Time       time.Time `json:"time"`
	Version    float64   `json:"version,omitempty"`
	HasVersion bool      `json:"has_version,omitempty"`
}

func (e *transitionEvent) before(o *transitionEvent) bool {
	if e.HasVersion && o.HasVersion && e.Version != o.Version {
		return e.Version < o.Version
	}
	if !e.EventTime.Equal(o.EventTime) {
		return e.EventTime.Before(o.EventTime)
	}
	return e.EventID < o.EventID
}

func newTransition(p *Partition, r *rules.Rule) *transition {
	return &transition{
		ruleBase: newRuleBase(p, r),
		spec:     r.Transition,
		entities: map[string]*entityState{},
		stale:    p.metrics.StaleEvents.WithLabelValues(r.Name),
	}
}

func (t *transition) bufferKey(e *transitionEvent) string {
	return prefixRule + t.rule.Name + "/q/" + string(timeBytes(e.EventTime)) + e.Key + "\x00" + e.EventID
}

func (t *transition) entityKey(key string) string {
	return prefixRule + t.rule.Name + "/e/" + key
}

func (t *transition) pending() int { return t.buffer.Len() }

func (t *transition) extract(ev *rules.Event, _ *sideRef, m *match) error {
	s, err := t.spec.State.Eval(ev)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	m.state = s
	if t.spec.Version != nil {
		v, err := t.spec.Version.Eval(ev)
		if err != nil {
			return fmt.Errorf("version: %w", err)
		}
		m.version, m.hasVersion = v, true
	}
	return nil
}

func (t *transition) load(snap Snapshot) error {
	err := snap.Scan(prefixRule+t.rule.Name+"/q/", func(_ string, v []byte) error {
		e := &transitionEvent{}
		if err := json.Unmarshal(v, e); err != nil {
			return fmt.Errorf("decode buffered transition: %w", err)
		}
		heap.Push(&t.buffer, e)
		return nil
	})
	if err != nil {
		return err
	}
	return snap.Scan(prefixRule+t.rule.Name+"/e/", func(_ string, v []byte) error {
		e := &entityState{}
		if err := json.Unmarshal(v, e); err != nil {
			return fmt.Errorf("decode entity state: %w", err)
		}
		t.entities[e.Key] = e
		heap.Push(&t.expiry, entityAge{key: e.Key, time: e.Time})
		return nil
	})
}

func (t *transition) apply(m *match, _ time.Time) {
	e := &transitionEvent{trigger: m.trigger(), State: m.state, Version: m.version, HasVersion: m.hasVersion, gen: t.p.gen}
	heap.Push(&t.buffer, e)
	b, err := json.Marshal(e)
	if err != nil {
		panic(fmt.Sprintf("encode transition: %v", err))
	}
	t.p.put(t.bufferKey(e), b)
}

func (t *transition) advance(now time.Time) {
	wm := t.computeWatermark(now)
	var due []*transitionEvent
	for t.buffer.Len() > 0 && !t.buffer[0].EventTime.After(wm) {
		e := heap.Pop(&t.buffer).(*transitionEvent)
		t.p.remove(t.bufferKey(e), e.gen)
		due = append(due, e)
	}
	// Events released together are applied per entity in their true order.
	sort.SliceStable(due, func(i, j int) bool {
		if due[i].Key != due[j].Key {
			return due[i].Key < due[j].Key
		}
		return due[i].before(due[j])
	})
	for _, e := range due {
		t.step(e, now)
	}
	for t.expiry.Len() > 0 && t.expiry[0].time.Add(t.spec.Retention).Before(wm) {
		a := heap.Pop(&t.expiry).(entityAge)
		if cur := t.entities[a.key]; cur != nil && cur.Time.Equal(a.time) {
			delete(t.entities, a.key)
			t.p.delta.Ops[t.entityKey(a.key)] = Op{Delete: true}
		}
	}
	t.pendingGauge.Set(float64(t.buffer.Len()))
}

func (t *transition) step(e *transitionEvent, now time.Time) {
	cur := t.entities[e.Key]
	switch {
	case cur == nil:
		if t.spec.Initial != nil && !t.spec.Initial[e.State] {
			t.ruleBase.open(e.trigger, e.EventTime, now, "starts in "+e.State)
		}
	case cur.EventID == e.EventID:
		return // a redelivery
	case t.older(e, cur):
		t.stale.Inc()
		return
	case cur.State == e.State:
		// Staying put is a retried write, not a move.
	case !t.spec.Allowed[cur.State][e.State]:
		t.ruleBase.open(e.trigger, e.EventTime, now, cur.State+" -> "+e.State)
	}
	t.judged()
	next := &entityState{Key: e.Key, State: e.State, EventID: e.EventID, Time: e.EventTime, Version: e.Version, HasVersion: e.HasVersion}
	t.entities[e.Key] = next
	heap.Push(&t.expiry, entityAge{key: e.Key, time: e.EventTime})
	b, err := json.Marshal(next)
	if err != nil {
		panic(fmt.Sprintf("encode entity state: %v", err))
	}
	t.p.put(t.entityKey(e.Key), b)
}

// older reports whether e comes before the entity's applied state: it
// arrived later than the lateness allowed, and is ignored and counted.
func (t *transition) older(e *transitionEvent, cur *entityState) bool {
	if e.HasVersion && cur.HasVersion {
		return e.Version < cur.Version
	}
	return e.EventTime.Before(cur.Time)
}

type transitionQueue []*transitionEvent

func (q transitionQueue) Len() int           { return len(q) }
func (q transitionQueue) Less(i, j int) bool { return q[i].EventTime.Before(q[j].EventTime) }
func (q transitionQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *transitionQueue) Push(x any)        { *q = append(*q, x.(*transitionEvent)) }
func (q *transitionQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// entityAge orders entities by their last event, for retention.
type entityAge struct {
	key  string
	time time.Time
}

type entityQueue []entityAge

func (q entityQueue) Len() int           { return len(q) }
func (q entityQueue) Less(i, j int) bool { return q[i].time.Before(q[j].time) }
func (q entityQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *entityQueue) Push(x any)        { *q = append(*q, x.(entityAge)) }
func (q *entityQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
