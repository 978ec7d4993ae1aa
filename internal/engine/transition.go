package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/statekey"
)

// transition evaluates one transition rule on one partition. Events are held
// until the watermark passes them and then applied per entity in order (by
// version when the stream has one, else event time), so events reordered
// within the allowed lateness are judged in their true order.
//
// State, under r/<rule id>/:
//
//	q/<event time><key>\x00<id> buffered events, released by a range scan
//	e/<key>                     the entity's applied state
//	E/<time><key>               retention index of entities, empty
//	n                           how many events are buffered
type transition struct {
	ruleBase
	spec  *rules.Transition
	n     *counter
	stale prometheus.Counter
	// bufferTop is the greatest buffer key that was durable when the
	// partition was made ("" when none), and buffered the buffer keys
	// written since above it and not released yet. A buffer key above
	// bufferTop that buffered does not hold exists in no layer, so the
	// redelivery check reads nothing for it: nearly every event is new,
	// and the store's read of a key that does not exist walks every level.
	bufferTop string
	buffered  map[string]struct{}
	// due is reused by advance for the events it releases.
	due []transitionEvent
}

// transitionEvent is one buffered state change.
type transitionEvent struct {
	trigger
	State      string
	Version    float64
	HasVersion bool
}

// entityState is an entity's applied state.
type entityState struct {
	State      string
	EventID    string
	Time       time.Time
	Version    float64
	HasVersion bool
}

func (e *transitionEvent) before(o *transitionEvent) bool {
	if e.HasVersion && o.HasVersion && e.Version != o.Version {
		return e.Version < o.Version
	}
	return before(&e.trigger, &o.trigger)
}

func newTransition(p *Partition, r *rules.Rule) *transition {
	return &transition{
		ruleBase: newRuleBase(p, r),
		spec:     r.Transition,
		stale:    p.metrics.StaleEvents.WithLabelValues(r.Name),
	}
}

func (t *transition) bufferKey(e *transitionEvent) string {
	return t.timeKey("q", e.EventTime, e.Key, true, e.EventID)
}

func (t *transition) load() {
	t.n = t.p.newCounter(t.prefix + "n")
	t.buffered = map[string]struct{}{}
	if t.p.snap != nil {
		qp := t.key("q", "")
		top, _, err := lastKey(t.p.snap, qp, statekey.PrefixEnd(qp))
		if err != nil {
			t.p.fail(fmt.Errorf("rule %s: last buffered event: %w", t.rule.Name, err))
		}
		t.bufferTop = top
	}
	t.pendingGauge.Set(float64(t.n.n))
}

func (t *transition) duePrefixes() []string { return []string{t.key("q", ""), t.key("E", "")} }

func (t *transition) pending() int { return int(t.n.n) }

func (t *transition) extract(ev *rules.Event, _ *sideRef, m *match) error {
	s, err := t.spec.State.EvalTransient(ev)
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

func (t *transition) apply(m *match, _ time.Time) {
	e := &transitionEvent{trigger: m.trigger(), State: m.state, Version: m.version, HasVersion: m.hasVersion}
	k := t.bufferKey(e)
	if _, ok := t.buffered[k]; ok {
		return // the same event buffered already
	}
	if k <= t.bufferTop {
		if _, ok := t.p.get(k); ok {
			return // buffered before this partition was made
		}
	} else {
		t.buffered[k] = struct{}{}
	}
	t.p.put(k, make(enc, 0, triggerSize(&e.trigger)+len(e.State)+binary.MaxVarintLen32+9).trigger(&e.trigger).str(e.State).f64(e.Version).flag(e.HasVersion), true)
	t.n.add(1)
}

func (t *transition) advance(now time.Time) {
	wm := t.computeWatermark(now)
	if wm.IsZero() {
		return
	}
	// The released events are gathered by value in a slice the rule reuses
	// advance after advance, not one allocation each.
	due := t.due[:0]
	qp := t.key("q", "")
	t.p.scanDue(qp, statekey.Until(qp, wm.Add(1)), func(k string, v []byte) bool {
		d := dec{b: bytes.Clone(v)} // the scan lends v for this call only
		e := transitionEvent{trigger: d.trigger(), State: d.str(), Version: d.f64(), HasVersion: d.flag()}
		if d.err != nil {
			t.p.fail(fmt.Errorf("rule %s: buffered event %q: %w", t.rule.Name, k, d.err))
			return false
		}
		t.p.del(k)
		delete(t.buffered, k)
		t.n.add(-1)
		due = append(due, e)
		return true
	})
	// Events released together are applied per entity in their true order.
	slices.SortStableFunc(due, func(a, b transitionEvent) int {
		switch {
		case a.Key != b.Key:
			return strings.Compare(a.Key, b.Key)
		case a.before(&b):
			return -1
		case b.before(&a):
			return 1
		}
		return 0
	})
	for i := range due {
		t.step(&due[i], now)
	}
	clear(due) // let the events' buffers go
	t.due = due[:0]
	ep := t.key("E", "")
	t.p.scanDue(ep, statekey.Until(ep, wm.Add(-t.spec.Retention)), func(k string, _ []byte) bool {
		t.p.del(k)
		t.p.del(t.key("e", k[len(ep)+8:]))
		return true
	})
	t.pendingGauge.Set(float64(t.n.n))
}

func (t *transition) entity(key string) *entityState {
	b, ok := t.p.get(t.key("e", key))
	if !ok {
		return nil
	}
	d := dec{b: b}
	e := &entityState{State: d.str(), EventID: d.str(), Time: d.time(), Version: d.f64(), HasVersion: d.flag()}
	if d.err != nil {
		t.p.fail(fmt.Errorf("rule %s: entity %q: %w", t.rule.Name, key, d.err))
		return nil
	}
	return e
}

func (t *transition) step(e *transitionEvent, now time.Time) {
	cur := t.entity(e.Key)
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
	if cur != nil {
		t.delTimeKey("E", cur.Time, e.Key, false, "")
	}
	t.p.put(t.key("e", e.Key), make(enc, 0, len(e.State)+len(e.EventID)+2*binary.MaxVarintLen32+17).str(e.State).str(e.EventID).time(e.EventTime).f64(e.Version).flag(e.HasVersion), cur == nil)
	t.p.put(t.timeKey("E", e.EventTime, e.Key, false, ""), nil, true)
}

// older reports whether e comes before the entity's applied state: it
// arrived later than the lateness allowed, and is ignored and counted.
func (t *transition) older(e *transitionEvent, cur *entityState) bool {
	if e.HasVersion && cur.HasVersion {
		return e.Version < cur.Version
	}
	return e.EventTime.Before(cur.Time)
}
