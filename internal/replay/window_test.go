package replay_test

import (
	"testing"
	"time"

	"github.com/invmon/invmon/internal/replay"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
)

func TestReplayWindowSemantics(t *testing.T) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rule          string
		leadIn, reach time.Duration
		trigger       string
	}{
		{sim.RuleCapturedPaymentHasLedgerEntry, 2 * time.Second, 30 * time.Second, "payments"},
		{sim.RuleFulfilledOrderHasCapture, 24 * time.Hour, 30 * time.Second, "orders"},
		{sim.RuleNoDuplicateLedgerEffect, 24 * time.Hour, 0, "ledger"},
		{sim.RulePaymentTransitionsAllowed, 0, 0, "payments"},
		{sim.RuleActiveSubscriptionEntitled, 0, 0, "entitlements"},
	} {
		sel, err := replay.Select(rs, []string{c.rule})
		if err != nil {
			t.Fatal(err)
		}
		r := sel.Rules[0]
		if got := replay.LeadIn(r); got != c.leadIn {
			t.Errorf("%s: lead-in %s, want %s", c.rule, got, c.leadIn)
		}
		if got := replay.Reach(r); got != c.reach {
			t.Errorf("%s: reach %s, want %s", c.rule, got, c.reach)
		}
		if got := replay.TriggerSide(r).Stream.Topic; got != c.trigger {
			t.Errorf("%s: triggers on %s, want %s", c.rule, got, c.trigger)
		}
		if sel.Version == rs.Version || len(sel.Streams) == 0 {
			t.Errorf("%s: selection version %s (all: %s), %d streams", c.rule, sel.Version, rs.Version, len(sel.Streams))
		}
	}
	if replay.Horizon(rs) != 30*time.Second || replay.AutoLeadIn(rs) != 24*time.Hour {
		t.Errorf("horizon %s, lead-in %s: want 30s and 24h", replay.Horizon(rs), replay.AutoLeadIn(rs))
	}

	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"now":                         now,
		"now-90m":                     now.Add(-90 * time.Minute),
		"2026-11-20T09:00:00Z":        time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC),
		"2026-11-20T10:00:00.5+01:00": time.Date(2026, 11, 20, 9, 0, 0, 5e8, time.UTC),
	} {
		got, err := replay.ParseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "now-", "now-1x", "2026-11-20"} {
		if _, err := replay.ParseTime(bad, now); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}
