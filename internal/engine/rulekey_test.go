package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/statekey"
)

// Every key of a rule's state starts with its fixed-length id, never its
// name: the name would be carried by every state write, read and changelog
// record (state format 4).
func TestRuleStateKeysCarryTheRuleIDNotItsName(t *testing.T) {
	h := newKindHarness(t, "no_duplicate_ledger_effect.yaml", "payment_transitions.yaml", "captured_payment_has_ledger_entry.yaml")
	h.send("payments", paymentEvent("p1", "pending", "${+0s}"))
	h.send("payments", paymentEvent("p1", "captured", "${+1s}"))
	h.send("ledger", ledgerEntry("le-1", "k1", "${+2s}"))
	h.at(30 * time.Second)
	prefixes := map[string]string{}
	for _, r := range h.rs.Rules {
		prefixes[statekey.RulePrefix(r.Name)] = r.Name
	}
	seen := map[string]int{}
	err := ScanPrefix(h.snap, statekey.Rule, func(k string, _ []byte) error {
		name, ok := prefixes[k[:len(statekey.Rule)+statekey.RuleIDLen+1]]
		if !ok {
			t.Errorf("state key %q starts with no rule's id", k)
			return nil
		}
		if strings.Contains(k, name) {
			t.Errorf("state key %q carries its rule's name", k)
		}
		seen[name]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(h.rs.Rules) {
		t.Fatalf("state keys of %d rules (%v), want all %d: the test checks less than it says", len(seen), seen, len(h.rs.Rules))
	}
}

func TestRulesWhoseIDsCollideAreRefused(t *testing.T) {
	rs := []*rules.Rule{{Name: "a"}, {Name: "b"}}
	if err := checkRuleIDs(rs, statekey.RuleID); err != nil {
		t.Fatalf("distinct ids refused: %v", err)
	}
	same := func(string) string { return "00000000" }
	err := checkRuleIDs(rs, same)
	if err == nil || !strings.Contains(err.Error(), `"a" and "b"`) {
		t.Fatalf("colliding ids: got %v, want an error naming both rules", err)
	}
}
