package engine

import (
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
)

// Ids and keys read from a record share its decode buffer. A violation
// recorded while the record is applied outlives it (the delta's Changed
// list goes to the alerting side after the next records are decoded), so
// its strings must be its own: decoding the next record must not change it.
func TestViolationKeepsItsStringsAfterTheNextRecord(t *testing.T) {
	rs, err := rules.LoadFiles("../../rules/no_duplicate_ledger_effect.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPartition(0, rs, NewMemSnapshot(), nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	entry := func(off int64, id, idem, account string) *Record {
		v := `{"entry_id":"` + id + `","idempotency_key":"` + idem + `","payment_id":"pay-1","account_id":"` + account +
			`","amount_cents":100,"direction":"debit","occurred_at":"2026-11-20T09:00:0` + string(rune('0'+off)) + `Z"}`
		return &Record{Topic: "ledger", Offset: off, Value: []byte(v)}
	}
	now := time.Date(2026, 11, 20, 9, 1, 0, 0, time.UTC)
	for _, r := range []*Record{entry(1, "entry-aaaa", "idem-1111", "acct-aaaa"), entry(2, "entry-bbbb", "idem-1111", "acct-bbbb")} {
		if err := p.Apply(r, now); err != nil {
			t.Fatal(err)
		}
	}
	// Same lengths, other bytes: what a reused buffer would show through.
	if err := p.Apply(entry(3, "entry-zzzz", "idem-9999", "acct-zzzz"), now); err != nil {
		t.Fatal(err)
	}
	changed := p.TakeDelta().Changed
	if len(changed) != 1 {
		t.Fatalf("%d violations, want the one duplicate", len(changed))
	}
	v := changed[0]
	if v.Key != "idem-1111" || v.TriggerEventID != "entry-bbbb" || v.Customer != "acct-bbbb" {
		t.Fatalf("violation key %q, trigger %q, customer %q; want idem-1111, entry-bbbb, acct-bbbb", v.Key, v.TriggerEventID, v.Customer)
	}
}
