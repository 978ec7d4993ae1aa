package alert

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// commitViolations writes violations into partition p of the state as the
// engine does: the record and its secondary keys in one commit.
func commitViolations(t *testing.T, db *joinstate.Store, p int32, vs ...violation.Violation) {
	t.Helper()
	ops := map[string]engine.Op{}
	for i := range vs {
		b, err := json.Marshal(&vs[i])
		if err != nil {
			t.Fatal(err)
		}
		ops[statekey.Violation+vs[i].ID] = engine.Op{Value: b}
		for _, k := range statekey.IndexKeys(&vs[i]) {
			ops[k] = engine.Op{Value: []byte{}}
		}
	}
	if err := db.Commit(joinstate.PartitionDelta{Partition: p, Delta: &engine.Delta{Ops: ops}}); err != nil {
		t.Fatal(err)
	}
}

// The manager pages on open violations it reads from the state, with no
// Seed and no copy of them: violations on two partitions, written before it
// started, are paged with their count, customers and total; a resolution
// observed after its commit lowers the count at once; and a change it was
// never told of is read at the next ResendInterval.
func TestOpenViolationsAreReadFromStateNotSeeded(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	db := memDB(t)
	other := "other_rule"
	v1 := openViolation(ruleName, "pay-1", "acct-1", 100)
	v2 := openViolation(ruleName, "pay-2", "acct-2", 20.5)
	v3 := openViolation(ruleName, "pay-3", "acct-1", 4)
	done := resolve(openViolation(ruleName, "pay-0", "acct-9", 1000), t0)
	commitViolations(t, db, 0, v1, v3, done, openViolation(other, "x", "acct-7", 1))
	commitViolations(t, db, 3, v2)

	m := newManager(t, testConfig(clk, am.URL()), db, nil)
	if err := m.SetRules([]RuleSpec{paymentRule}); err != nil {
		t.Fatal(err)
	}
	m.ReadOpenFrom(db)
	tick(t, m)
	a := only(t, am.takeOne(t))
	if got := [3]string{a.Annotations["open_violations"], a.Annotations["customers"], a.Annotations["total_impact"]}; got != [3]string{"3", "2", "124.50"} {
		t.Fatalf("open_violations, customers, total_impact = %q, want 3, 2, 124.50", got)
	}
	if len(m.open) != 0 {
		t.Fatalf("the manager holds %d rules of open violations in memory", len(m.open))
	}

	// Resolved on its partition, then observed: read again at once.
	clk.Step(time.Second)
	r1 := resolve(v1, clk.Now())
	commitViolations(t, db, 0, r1)
	m.Observe(r1)
	tick(t, m)
	a = only(t, am.takeOne(t))
	if a.Annotations["open_violations"] != "2" || a.Annotations["total_impact"] != "24.50" {
		t.Fatalf("after a resolution: open_violations %q total_impact %q, want 2 and 24.50", a.Annotations["open_violations"], a.Annotations["total_impact"])
	}

	// A violation committed without being observed is found at the next
	// full read, one ResendInterval after the last.
	commitViolations(t, db, 1, openViolation(ruleName, "pay-4", "acct-4", 10))
	clk.Step(10 * time.Second)
	tick(t, m)
	am.expectNone(t)
	clk.Step(time.Minute)
	tick(t, m)
	a = only(t, am.takeOne(t))
	if a.Annotations["open_violations"] != "3" {
		t.Fatalf("after an unobserved violation and a resend interval: open_violations %q, want 3", a.Annotations["open_violations"])
	}

	// Everything resolved: the alert resolves.
	clk.Step(time.Second)
	var all []violation.Violation
	for _, v := range []violation.Violation{v2, v3, openViolation(ruleName, "pay-4", "acct-4", 10)} {
		all = append(all, resolve(v, clk.Now()))
	}
	commitViolations(t, db, 0, all[1])
	commitViolations(t, db, 3, all[0])
	commitViolations(t, db, 1, all[2])
	m.Observe(all...)
	tick(t, m)
	a = only(t, am.takeOne(t))
	if !a.EndsAt.Equal(clk.Now()) {
		t.Fatalf("alert not resolved: endsAt %s, now %s", a.EndsAt, clk.Now())
	}
}
