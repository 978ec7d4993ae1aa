package engine

import (
	"testing"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/statekey"
)

// TestTransitionDedupsABufferedEventAcrossARestart covers the buffer keys
// the transition rule does not read when it knows they are new: an event
// buffered (and durable) before the partition was made, delivered again
// after, is recognised and not buffered twice, whichever side of the
// greatest durable buffer key it falls.
func TestTransitionDedupsABufferedEventAcrossARestart(t *testing.T) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := sim.Generate("friday-rollback", 2, sim.Options{Payments: 50})
	if err != nil {
		t.Fatal(err)
	}
	var payments []sim.Event
	for _, e := range ds.Events {
		if e.Topic == "payments" {
			payments = append(payments, e)
		}
	}
	snap := NewMemSnapshot()
	start := payments[0].Time
	newEngine := func() *Partition {
		p, err := NewPartition(0, rs, snap, nil, nil, start)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	apply := func(p *Partition, events []sim.Event) {
		for i, e := range events {
			// The clock stays at the start: nothing is released.
			if err := p.Apply(&Record{Topic: e.Topic, Offset: int64(i), Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}, start); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Buffered, not released: the first event's time is the watermark's
	// ceiling, and lateness holds the rest.
	first := newEngine()
	apply(first, payments[:20])
	buffered := first.PendingCount()
	if buffered == 0 {
		t.Fatal("nothing buffered: the test checks nothing")
	}
	snap.Apply(first.TakeDelta())
	first.Close()

	again := newEngine()
	apply(again, payments[:20])  // all at or below the greatest durable buffer key
	apply(again, payments[5:25]) // and new ones above it, then again
	apply(again, payments[20:25])
	// What one engine buffers of the same events without a restart (the
	// mix has redeliveries of its own).
	wholeSnap := NewMemSnapshot()
	whole, err := NewPartition(0, rs, wholeSnap, nil, nil, start)
	if err != nil {
		t.Fatal(err)
	}
	apply(whole, payments[:25])
	wholeSnap.Apply(whole.TakeDelta())
	snap.Apply(again.TakeDelta())
	bufferKeys := func(s Snapshot) int {
		n := 0
		if err := ScanPrefix(s, statekey.RulePrefix("payment_transitions_allowed")+"q/", func(string, []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	want := bufferKeys(wholeSnap)
	if want == 0 || whole.PendingCount() <= buffered {
		t.Fatal("nothing buffered, or nothing new after the restart: the test checks less than it says")
	}
	if got := bufferKeys(snap); got != want {
		t.Fatalf("%d buffer keys are durable after the restart and redeliveries, want %d", got, want)
	}
	if got, want := again.PendingCount(), whole.PendingCount(); got != want {
		t.Fatalf("after the restart and redeliveries %d events are pending, want %d", got, want)
	}
}
