package alert

import (
	"fmt"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/violation"
)

// TestOpenViolationsAreReadFromTheViewNotHeld: the manager pages on the
// open violations it reads from its source, the group view, and keeps no
// copy of them. 10,000 open violations written to the view before it
// started are paged with their count, customers and total, while the
// manager holds one aggregate per rule of at most TopN violations; a
// resolution observed lowers the count at once; and a view emptied behind
// its back (nothing observed) resolves the alert at the next full read, one
// ResendInterval later, which a manager holding its own copy would not.
func TestOpenViolationsAreReadFromTheViewNotHeld(t *testing.T) {
	const n = 10000
	am := newRecorder(t)
	clk := newClock()
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { _ = db.Close() })
	m := newManager(t, testConfig(clk, am.URL()), db, nil)
	if err := m.SetRules([]RuleSpec{paymentRule}); err != nil {
		t.Fatal(err)
	}
	var vs []violation.Violation
	for i := range n {
		vs = append(vs, openViolation(ruleName, fmt.Sprintf("pay-%d", i), fmt.Sprintf("acct-%d", i%100), 1))
	}
	vs = append(vs, resolve(openViolation(ruleName, "pay-done", "acct-x", 1000), t0), openViolation("other_rule", "x", "acct-y", 5))
	if _, err := m.view.Apply(int64(len(vs)), vs); err != nil {
		t.Fatal(err)
	}
	m.CaughtUp()
	tick(t, m)
	a := only(t, am.takeOne(t))
	if got := [3]string{a.Annotations["open_violations"], a.Annotations["customers"], a.Annotations["total_impact"]}; got != [3]string{"10000", "100", "10000.00"} {
		t.Fatalf("open_violations, customers, total_impact = %q, want 10000, 100, 10000.00", got)
	}
	m.mu.Lock()
	held := 0
	for _, agg := range m.aggs {
		held += len(agg.Top)
	}
	rules := len(m.aggs)
	m.mu.Unlock()
	if rules != 1 || held > TopN {
		t.Fatalf("the manager holds %d aggregates with %d violations; want 1 rule's, at most %d", rules, held, TopN)
	}

	// Resolved in the view and observed: read again at once.
	clk.Step(time.Second)
	m.Observe(resolve(vs[0], clk.Now()))
	tick(t, m)
	if a := only(t, am.takeOne(t)); a.Annotations["open_violations"] != "9999" {
		t.Fatalf("after a resolution: open_violations %q, want 9999", a.Annotations["open_violations"])
	}

	// The view loses every violation without the manager being told: the
	// next full read finds none, and the alert resolves.
	if err := m.view.Reset(); err != nil {
		t.Fatal(err)
	}
	clk.Step(10 * time.Second)
	tick(t, m)
	am.expectNone(t)
	clk.Step(time.Minute)
	tick(t, m)
	a = only(t, am.takeOne(t))
	if !a.EndsAt.Equal(clk.Now()) {
		t.Fatalf("alert not resolved from the emptied view: endsAt %s, now %s", a.EndsAt, clk.Now())
	}
}
