package engine

import (
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
)

// BenchmarkApplyFiveRules measures the engine's per-event path alone: the
// five example rules over the simulator's friday-rollback mix of the whole
// domain (payments, ledger, orders, entitlements, accounts) on one
// partition with its state in memory, applied in batches of 2,000 records
// and advanced and taken after each, as the consumer does. No Kafka, no
// Badger: what it reports (events/s, allocations and bytes per event) is the
// engine's own cost, the part `make bench` cannot separate from the rest.
func BenchmarkApplyFiveRules(b *testing.B) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		b.Fatal(err)
	}
	ds, err := sim.Generate("friday-rollback", 1, sim.Options{Payments: 10000})
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]Record, len(ds.Events))
	for i, e := range ds.Events {
		recs[i] = Record{Topic: e.Topic, Offset: int64(i), Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}
	}
	const batch = 2000
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		snap := NewMemSnapshot()
		start := recs[0].Timestamp
		p, err := NewPartition(0, rs, snap, nil, nil, start)
		if err != nil {
			b.Fatal(err)
		}
		for _, topic := range p.Topics() {
			p.SetCaughtUp(topic, true)
		}
		now := start
		for i := range recs {
			if t := recs[i].Timestamp; t.After(now) {
				now = t
			}
			if err := p.Apply(&recs[i], now); err != nil {
				b.Fatalf("event %d: %v", i, err)
			}
			if i%batch == batch-1 {
				p.Advance(now)
				d := p.TakeDelta()
				snap.Apply(d)
				d.Recycle()
			}
		}
		p.Advance(now.Add(time.Minute))
		snap.Apply(p.TakeDelta())
	}
	b.StopTimer()
	n := float64(b.N) * float64(len(recs))
	b.ReportMetric(n/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(len(recs)), "events/op")
}
