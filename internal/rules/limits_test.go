package rules_test

import (
	"strings"
	"testing"

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
