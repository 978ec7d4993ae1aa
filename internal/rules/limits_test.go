package rules_test

import (
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
)

// TestCostBetweenLimitAndBudgetWarns: an expression that may exceed the
// per-evaluation limit on the largest event, but not the budget, loads with
// a located warning; a cheap one loads without.
func TestCostBetweenLimitAndBudgetWarns(t *testing.T) {
	file := func(cond string) map[string][]byte {
		return map[string][]byte{"r.yaml": []byte(`streams:
  s:
    topic: t
    id: event.id
    key: event.k
    time: timestamp(event.at)
rules:
  - name: r
    kind: unique
    on:
      stream: s
      if: ` + cond + `
    window: 1h
`)}
	}
	rs, err := rules.Parse([]string{"r.yaml"}, file(`event.note.matches("^a+b+$")`))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Warnings) != 1 || !strings.HasPrefix(rs.Warnings[0].Error(), "r.yaml:12:11: ") || !strings.Contains(rs.Warnings[0].Error(), "per-evaluation limit") {
		t.Fatalf("warnings %v, want one at r.yaml:12:11 about the per-evaluation limit", rs.Warnings)
	}
	rs, err = rules.Parse([]string{"r.yaml"}, file(`event.status == "captured"`))
	if err != nil || len(rs.Warnings) != 0 {
		t.Fatalf("cheap condition: %v, warnings %v", err, rs.Warnings)
	}
}

// TestRuntimeLimitStaysWhereTheRecordKeyCanMakeItCostly: an expression is
// run without the per-evaluation cost limit only when its worst case cannot
// reach it. The record key is not bounded by the event size limit, so an
// expression over it keeps the limit, and a huge key is refused, not
// evaluated for as long as it takes; an expression over bounded event
// fields needs no limit and evaluates as before.
func TestRuntimeLimitStaysWhereTheRecordKeyCanMakeItCostly(t *testing.T) {
	parse := func(cond string) *rules.BoolExpr {
		t.Helper()
		rs, err := rules.Parse([]string{"r.yaml"}, map[string][]byte{"r.yaml": []byte(`streams:
  s:
    topic: t
    id: event.id
    key: event.k
    time: timestamp(event.at)
rules:
  - name: r
    kind: unique
    on:
      stream: s
      if: '` + cond + `'
    window: 1h
`)})
		if err != nil {
			t.Fatal(err)
		}
		return rs.Rules[0].Unique.On.Condition
	}
	dec := rules.NewDecoder(nil)
	value := []byte(`{"id":"e1","k":"a","at":"2026-11-20T09:00:00Z","amount_cents":250}`)
	bigKey := []byte(strings.Repeat("k", 4<<20))
	ev, err := dec.Decode("t", 0, 0, bigKey, value, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parse(`record.key.split("").exists(c, c == "x")`).Eval(ev); err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Fatalf("an expression over a 4 MiB record key: err %v, want the cost limit exceeded", err)
	}
	ok, err := parse(`double(event.amount_cents) / 100.0 > 2.0`).Eval(ev)
	if err != nil || !ok {
		t.Fatalf("bounded expression: %v, %v; want true", ok, err)
	}
}
