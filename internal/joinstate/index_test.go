package joinstate

import (
	"testing"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// A batch evaluated twice, by two engines of one partition, lands twice:
// the member lost the partition while the batch was on its way to Badger,
// got it back, and evaluated the same records again over the state without
// that batch, at a later clock. Each detection then has another detected_at
// (and each resolution another resolved_at), so other secondary keys; the
// second write believes the violation new. The state must still hold one
// index entry per violation, and so must a state restored from a changelog
// that carries both writes: the API lists every id once, and the pages by
// rule and state count what the page of everything counts.
func TestBatchLandedTwiceKeepsOneIndexEntryPerViolation(t *testing.T) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := sim.Generate("friday-rollback", 1, sim.Options{Payments: 600})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.TempDir(), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	engineAt := func(now time.Time) *engine.Partition {
		t.Helper()
		p, err := engine.NewPartition(0, rs, s.Snapshot(0), nil, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, topic := range p.Topics() {
			p.SetCaughtUp(topic, true)
		}
		return p
	}
	// evaluate applies a batch and takes its delta without committing it.
	evaluate := func(p *engine.Partition, batch []sim.Event, first int, now time.Time) *engine.Delta {
		t.Helper()
		for i, e := range batch {
			rec := &engine.Record{Topic: e.Topic, Offset: int64(first + i), Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}
			if err := p.Apply(rec, now); err != nil {
				t.Fatalf("event %d: %v", first+i, err)
			}
		}
		p.Advance(now)
		if err := p.Err(); err != nil {
			t.Fatal(err)
		}
		return p.TakeDelta()
	}
	var changelog []*engine.Delta
	commit := func(d *engine.Delta) {
		t.Helper()
		if err := s.Commit(PartitionDelta{Partition: 0, Delta: d}); err != nil {
			t.Fatal(err)
		}
		changelog = append(changelog, d)
	}
	const batchSize = 100
	now := ds.Events[0].Time
	for first := 0; first < len(ds.Events); first += batchSize {
		batch := ds.Events[first:min(first+batchSize, len(ds.Events))]
		for _, e := range batch {
			now = maxTime(now, e.Time)
		}
		// The first owner's batch is still on its way when the second owner
		// loads the partition and evaluates the same records a second later.
		lost := evaluate(engineAt(now), batch, first, now)
		again := evaluate(engineAt(now), batch, first, now.Add(time.Second))
		commit(lost)
		commit(again)
	}
	for _, d := range []time.Duration{time.Minute, time.Hour, 48 * time.Hour} {
		lost := evaluate(engineAt(now), nil, 0, now.Add(d))
		again := evaluate(engineAt(now), nil, 0, now.Add(d+time.Second))
		commit(lost)
		commit(again)
	}
	checkOneEntryPerViolation(t, s, rs, ds)

	// A member that gains the partition restores it from the changelog,
	// which carries both landings in the order they were made durable.
	r, err := Open(t.TempDir(), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	rest := r.NewRestorer(0)
	for _, d := range changelog {
		for k, op := range d.Ops {
			var v []byte
			if !op.Delete {
				v = append([]byte{}, op.Value...)
			}
			if err := rest.Add([]byte(k), v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := rest.Finish(int64(len(changelog))); err != nil {
		t.Fatal(err)
	}
	checkOneEntryPerViolation(t, r, rs, ds)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// checkOneEntryPerViolation checks that every violation of the store is
// listed once by every index, and that the store holds the ground truth.
func checkOneEntryPerViolation(t *testing.T, s *Store, rs *rules.RuleSet, ds *sim.Dataset) {
	t.Helper()
	records := 0
	err := engine.ScanPrefix(s.Snapshot(0), statekey.Violation, func(_ string, v []byte) error {
		if len(v) > 0 {
			records++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Small pages, so the cursor crosses many page boundaries.
	list := func(f Filter) []violation.Violation {
		t.Helper()
		var out []violation.Violation
		q := Query{Filter: f, Limit: 7}
		for {
			page, err := s.ViolationPage(q)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, page.Violations...)
			if page.Next == "" {
				return out
			}
			q.After = page.Next
		}
	}
	all := list(Filter{})
	seen := map[string]int{}
	for _, v := range all {
		seen[v.ID]++
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("violation %s listed %d times", id, n)
		}
	}
	byRuleState, byCustomer := 0, 0
	customers := map[string]bool{}
	names := make([]string, 0, len(rs.Rules))
	for _, r := range rs.Rules {
		names = append(names, r.Name)
		byRuleState += len(list(Filter{Rule: r.Name, State: violation.Open})) + len(list(Filter{Rule: r.Name, State: violation.Resolved}))
	}
	for _, v := range all {
		if v.Customer != "" && !customers[v.Customer] {
			customers[v.Customer] = true
			byCustomer += len(list(Filter{Customer: v.Customer}))
		}
	}
	withCustomer := 0
	for _, v := range all {
		if v.Customer != "" {
			withCustomer++
		}
	}
	if len(all) != records || byRuleState != records || byCustomer != withCustomer {
		t.Errorf("%d violation records; listed %d in all, %d by rule and state, %d by customer (%d have one)",
			records, len(all), byRuleState, byCustomer, withCustomer)
	}
	for rule, sc := range sim.Compare(ds.Truth, all, names) {
		if sc.Missed+sc.FalsePositives+sc.Duplicates > 0 || sc.Found != sc.Injected || sc.ResolvedFound != sc.ResolvedExpected {
			t.Errorf("%s: %+v", rule, sc)
		}
	}
	if records == 0 {
		t.Fatal("no violation recorded: the test proves nothing")
	}
}
