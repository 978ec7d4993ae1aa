package joinstate

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

var viewT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func viewOpen(id, rule, customer string, detected time.Time) violation.Violation {
	return violation.Violation{ID: id, Rule: rule, Key: "key-" + id, Customer: customer, State: violation.Open, Impact: 10, DetectedAt: detected}
}

func viewResolved(v violation.Violation, at time.Time) violation.Violation {
	v.State = violation.Resolved
	v.ResolvedAt = &at
	return v
}

func openIDs(t *testing.T, g *GroupView, rule string) []string {
	t.Helper()
	var ids []string
	if err := g.EachOpen(rule, func(v *violation.Violation) error {
		ids = append(ids, v.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

func ids(vs []violation.Violation) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.ID + ":" + string(v.State)
	}
	return out
}

// TestGroupViewAppliesLatestChangeOnceAndResumes: the view holds the latest
// change of each violation with one index entry each, reports a change read
// again as no change, keeps the offset it read up to across a reopen, and
// lives apart from the partitions' state.
func TestGroupViewAppliesLatestChangeOnceAndResumes(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := s.GroupView()
	if next, err := g.Next(); err != nil || next != 0 {
		t.Fatalf("empty view: Next = %d, %v", next, err)
	}
	a, b, c := viewOpen("a", "r1", "cust-1", viewT0), viewOpen("b", "r1", "cust-2", viewT0), viewOpen("c", "r2", "cust-1", viewT0)
	changed, err := g.Apply(3, []violation.Violation{a, b, c})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(changed)); got != "[a:open b:open c:open]" {
		t.Fatalf("first apply changed %s", got)
	}
	// b is detected again by a partition's new owner at a later clock (other
	// secondary keys), then resolved; a is read again, unchanged.
	b2 := b
	b2.DetectedAt = viewT0.Add(time.Minute)
	changed, err = g.Apply(6, []violation.Violation{a, b2, viewResolved(b2, viewT0.Add(2*time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(changed)); got != "[b:open b:resolved]" {
		t.Fatalf("second apply changed %s, want the duplicate of a left out", got)
	}
	if got := fmt.Sprint(openIDs(t, g, "r1")); got != "[a]" {
		t.Fatalf("open of r1 = %s, want [a]", got)
	}
	all, err := g.Violations(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(all)); got != "[b:resolved a:open c:open]" && got != "[b:resolved c:open a:open]" {
		t.Fatalf("every violation, newest first: %s (one entry per violation)", got)
	}
	byCustomer, err := g.ViolationPage(Query{Filter: Filter{Customer: "cust-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(byCustomer.Violations) != 2 {
		t.Fatalf("customer cust-1 has %d violations in the view, want 2", len(byCustomer.Violations))
	}
	if v, err := g.Violation("b"); err != nil || v == nil || v.State != violation.Resolved {
		t.Fatalf("Violation(b) = %+v, %v", v, err)
	}
	// The partitions' state does not see the view, nor the view the state.
	other := viewOpen("local", "r1", "cust-9", viewT0)
	raw, _ := json.Marshal(other)
	ops := map[string]engine.Op{statekey.Violation + other.ID: {Value: raw}}
	for _, k := range statekey.IndexKeys(&other) {
		ops[k] = engine.Op{Value: []byte{}}
	}
	if err := s.Commit(PartitionDelta{Partition: 0, Delta: &engine.Delta{Ops: ops}}); err != nil {
		t.Fatal(err)
	}
	local, err := s.Violations(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(local)); got != "[local:open]" {
		t.Fatalf("the state lists %s, want only its own violation", got)
	}
	if got := fmt.Sprint(openIDs(t, g, "r1")); got != "[a]" {
		t.Fatalf("the view lists %s for r1, want [a]", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g = s.GroupView()
	if next, err := g.Next(); err != nil || next != 6 {
		t.Fatalf("reopened view: Next = %d, %v; want 6", next, err)
	}
	if got := fmt.Sprint(openIDs(t, g, "r1")); got != "[a]" {
		t.Fatalf("reopened view: open of r1 = %s", got)
	}
}

// TestGroupViewExpiresResolvedAfterRetentionAndResets: resolved violations
// leave the view once resolved before the retention cut, open ones never;
// Reset empties the view and its offset.
func TestGroupViewExpiresResolvedAfterRetentionAndResets(t *testing.T) {
	s, err := Open(t.TempDir(), Options{InMemory: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g := s.GroupView()
	old := viewResolved(viewOpen("old", "r", "c", viewT0), viewT0.Add(time.Hour))
	recent := viewResolved(viewOpen("recent", "r", "c", viewT0), viewT0.Add(3*time.Hour))
	open := viewOpen("open", "r", "c", viewT0)
	if _, err := g.Apply(3, []violation.Violation{old, recent, open}); err != nil {
		t.Fatal(err)
	}
	n, err := g.Expire(viewT0.Add(2 * time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Expire = %d, %v; want 1", n, err)
	}
	all, err := g.Violations(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ids(all)); got != "[open:open recent:resolved]" && got != "[recent:resolved open:open]" {
		t.Fatalf("after expiry the view holds %s", got)
	}
	if v, _ := g.Violation("old"); v != nil {
		t.Fatalf("expired violation still readable: %+v", v)
	}
	if err := g.Reset(); err != nil {
		t.Fatal(err)
	}
	if next, err := g.Next(); err != nil || next != 0 {
		t.Fatalf("after Reset: Next = %d, %v", next, err)
	}
	if all, _ := g.Violations(Filter{}); len(all) != 0 {
		t.Fatalf("after Reset the view holds %d violations", len(all))
	}
}
