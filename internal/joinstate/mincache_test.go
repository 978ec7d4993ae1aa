package joinstate

import (
	"testing"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
)

// The engine over Badger with the cache at its minimum, on the
// friday-rollback incident, finds exactly the ground truth. Its evaluator is
// thrown away after every batch and a new one made over the store, so every
// state it judges by was read back from Badger: there is no copy in memory
// to fall back on.
func TestMinimumCacheFridayRollbackMatchesGroundTruth(t *testing.T) {
	fridayRollbackOverBadger(t, true)
}

// One engine kept over the whole run, as the consumer keeps it, reads its
// durable state through one view per batch: each batch's view must reflect
// the batches committed before it, or this misses and repeats verdicts.
func TestOneEngineAcrossBatchesMatchesGroundTruth(t *testing.T) {
	fridayRollbackOverBadger(t, false)
}

// fridayRollbackOverBadger runs the engine over Badger at its minimum cache
// on the friday-rollback incident, committing every 50 events, and checks
// the violations against the ground truth; with reloadEachBatch a new
// engine is made after every commit.
func fridayRollbackOverBadger(t *testing.T, reloadEachBatch bool) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := sim.Generate("friday-rollback", 1, sim.Options{Payments: 1500})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.TempDir(), Options{CacheSize: MinCacheSize}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	start := ds.Events[0].Time
	var p *engine.Partition
	reload := func(now time.Time) {
		t.Helper()
		if p, err = engine.NewPartition(0, rs, s.Snapshot(0), nil, nil, now); err != nil {
			t.Fatal(err)
		}
		for _, topic := range p.Topics() {
			p.SetCaughtUp(topic, true)
		}
	}
	commit := func(now time.Time) {
		t.Helper()
		p.Advance(now)
		if err := p.Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(PartitionDelta{Partition: 0, Delta: p.TakeDelta()}); err != nil {
			t.Fatal(err)
		}
		if reloadEachBatch {
			reload(now)
		}
	}
	reload(start)
	now := start
	for i, e := range ds.Events {
		if e.Time.After(now) {
			now = e.Time
		}
		rec := &engine.Record{Topic: e.Topic, Offset: int64(i), Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}
		if err := p.Apply(rec, now); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if i%50 == 0 {
			commit(now)
		}
	}
	for _, d := range []time.Duration{time.Minute, time.Hour, 48 * time.Hour} {
		commit(now.Add(d))
	}
	found, err := s.Violations(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(rs.Rules))
	for _, r := range rs.Rules {
		names = append(names, r.Name)
	}
	total := 0
	for rule, sc := range sim.Compare(ds.Truth, found, names) {
		total += sc.Found
		if sc.Missed+sc.FalsePositives+sc.Duplicates > 0 || sc.Found != sc.Injected || sc.ResolvedFound != sc.ResolvedExpected {
			t.Errorf("%s: %+v", rule, sc)
		}
	}
	if total == 0 || total != len(ds.Truth.Violations) {
		t.Fatalf("found %d of the %d injected violations", total, len(ds.Truth.Violations))
	}
	t.Logf("%d events, %d violations, cache %d MiB", len(ds.Events), total, MinCacheSize>>20)
}
