package engine

import (
	"bytes"
	"maps"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
)

// recycleRun applies the friday-rollback mix of every example rule in
// batches of 97 events. With lag, a batch is made durable only after the
// next one is taken, as the consumer's pipeline does, and recycled: every
// other one before it is durable, which must not hand its map on yet. It
// returns the final state and every violation change in order.
func recycleRun(t *testing.T, rs *rules.RuleSet, events []sim.Event, lag bool) (map[string][]byte, []string) {
	t.Helper()
	snap := NewMemSnapshot()
	start := events[0].Time
	p, err := NewPartition(0, rs, snap, nil, nil, start)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range p.Topics() {
		p.SetCaughtUp(topic, true)
	}
	var changes []string
	var pending *Delta
	batches := 0
	take := func(now time.Time) {
		p.Advance(now)
		d := p.TakeDelta()
		for _, v := range d.Changed {
			changes = append(changes, v.ID+" "+string(v.State))
		}
		batches++
		if !lag {
			snap.Apply(d)
			return
		}
		if batches%2 == 0 {
			d.Recycle() // before it is durable: kept until it is
		}
		if pending != nil {
			snap.Apply(pending)
			pending.Recycle()
		}
		pending = d
	}
	now := start
	for i, e := range events {
		if e.Time.After(now) {
			now = e.Time
		}
		if err := p.Apply(&Record{Topic: e.Topic, Offset: int64(i), Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}, now); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if i%97 == 96 {
			take(now)
		}
	}
	for _, d := range []time.Duration{time.Minute, time.Hour, 48 * time.Hour} {
		take(now.Add(d))
	}
	if pending != nil {
		snap.Apply(pending)
	}
	return snap.m, changes
}

// TestRecycledDeltasChangeNoVerdict: reusing the maps of recycled deltas
// leaves the state and every violation change exactly as without it, also
// when deltas are recycled before they are durable and made durable a
// batch late (a map still read through must not be reused).
func TestRecycledDeltasChangeNoVerdict(t *testing.T) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := sim.Generate("friday-rollback", 3, sim.Options{Payments: 1500})
	if err != nil {
		t.Fatal(err)
	}
	wantState, wantChanges := recycleRun(t, rs, ds.Events, false)
	gotState, gotChanges := recycleRun(t, rs, ds.Events, true)
	if len(wantChanges) < 50 {
		t.Fatalf("only %d violation changes: the workload judges too little", len(wantChanges))
	}
	if !maps.EqualFunc(gotState, wantState, bytes.Equal) {
		t.Fatalf("state differs with recycled deltas: %d keys, want %d", len(gotState), len(wantState))
	}
	if len(gotChanges) != len(wantChanges) {
		t.Fatalf("%d violation changes with recycled deltas, want %d", len(gotChanges), len(wantChanges))
	}
	for i := range wantChanges {
		if gotChanges[i] != wantChanges[i] {
			t.Fatalf("violation change %d: %s, want %s", i, gotChanges[i], wantChanges[i])
		}
	}
}

// TestOnlyRecycledDurableDeltasAreReused: a durable delta its caller keeps
// (never recycled) keeps its changes; a recycled one hands its map to the
// next delta and reads as empty.
func TestOnlyRecycledDurableDeltasAreReused(t *testing.T) {
	snap := NewMemSnapshot()
	p, err := NewPartition(0, &rules.RuleSet{}, snap, nil, nil, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	p.put("r/a/1", []byte("one"), true)
	kept := p.TakeDelta()
	snap.Apply(kept)
	p.put("r/a/2", []byte("two"), true)
	recycled := p.TakeDelta()
	snap.Apply(recycled)
	recycled.Recycle()
	p.put("r/a/3", []byte("three"), true)
	next := p.TakeDelta() // drops both; reuses recycled's map
	p.put("r/a/4", []byte("four"), true)
	if len(kept.Ops) != 1 || string(kept.Ops["r/a/1"].Value) != "one" {
		t.Fatalf("kept delta changed: %v", kept.Ops)
	}
	if recycled.Ops != nil {
		t.Fatalf("recycled delta still reads %v", recycled.Ops)
	}
	if len(next.Ops) != 1 || string(next.Ops["r/a/3"].Value) != "three" {
		t.Fatalf("next delta = %v", next.Ops)
	}
	if _, ok := p.delta.Ops["r/a/2"]; ok || len(p.delta.Ops) != 1 {
		t.Fatalf("the reused map kept an old change: %v", p.delta.Ops)
	}
}
