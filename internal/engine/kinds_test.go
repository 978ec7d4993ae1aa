package engine

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fastjson"

	"github.com/invmon/invmon/internal/rules"
)

// kindHarness drives a partition over any of the example rule files with a
// stepped clock, every input caught up.
type kindHarness struct {
	t      *testing.T
	rs     *rules.RuleSet
	p      *Partition
	snap   *MemSnapshot
	now    time.Time
	offset int64
}

func newKindHarness(t *testing.T, files ...string) *kindHarness {
	t.Helper()
	for i, f := range files {
		files[i] = "../../rules/" + f
	}
	rs, err := rules.LoadFiles(files...)
	if err != nil {
		t.Fatal(err)
	}
	h := &kindHarness{t: t, rs: rs, snap: NewMemSnapshot(), now: t0}
	h.reload()
	return h
}

func (h *kindHarness) reload() {
	h.t.Helper()
	p, err := NewPartition(0, h.rs, h.snap, nil, nil, h.now)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, topic := range p.Topics() {
		p.SetCaughtUp(topic, true)
	}
	h.p = p
}

// send applies a record whose value is JSON with ${+Ns} replaced by t0+N
// seconds in RFC 3339.
func (h *kindHarness) send(topic, value string) {
	h.t.Helper()
	for strings.Contains(value, "${+") {
		i := strings.Index(value, "${+")
		j := strings.Index(value[i:], "}") + i
		d, err := time.ParseDuration(value[i+3 : j])
		if err != nil {
			h.t.Fatal(err)
		}
		value = value[:i] + t0.Add(d).Format(time.RFC3339Nano) + value[j+1:]
	}
	h.offset++
	if err := h.p.Apply(&Record{Topic: topic, Offset: h.offset, Value: []byte(value), Timestamp: t0}, h.now); err != nil {
		h.t.Fatal(err)
	}
	h.snap.Apply(h.p.TakeDelta())
}

// at moves the clock to t0+d (inputs are idle after 10s, so the watermark
// follows the clock) and fires what is due.
func (h *kindHarness) at(d time.Duration) {
	h.now = t0.Add(d)
	h.p.Advance(h.now)
	h.snap.Apply(h.p.TakeDelta())
}

func (h *kindHarness) expect(want ...string) {
	h.t.Helper()
	var got []string
	for _, v := range h.p.Violations() {
		got = append(got, fmt.Sprintf("%s %s %s", v.Rule, v.Key, v.State))
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		h.t.Fatalf("violations:\n got: %q\nwant: %q", got, want)
	}
}

func ledgerEntry(entry, idem string, at string) string {
	return fmt.Sprintf(`{"entry_id":"%s","idempotency_key":"%s","payment_id":"p-%s","account_id":"a1","amount_cents":1000,"direction":"credit","occurred_at":"%s"}`, entry, idem, idem, at)
}

func TestUniqueFlagsTheLaterOfTwoEffectsWhateverTheReadOrder(t *testing.T) {
	for _, order := range [][]int{{0, 1}, {1, 0}} {
		h := newKindHarness(t, "no_duplicate_ledger_effect.yaml")
		events := []string{ledgerEntry("le-1", "k1", "${+0s}"), ledgerEntry("le-2", "k1", "${+3s}")}
		for _, i := range order {
			h.send("ledger", events[i])
		}
		h.send("ledger", ledgerEntry("le-1", "k1", "${+0s}")) // redelivery: not an effect
		h.send("ledger", ledgerEntry("le-3", "k2", "${+1s}")) // another key
		h.expect("no_duplicate_ledger_effect k1 open")
		v := h.p.Violations()[0]
		if v.TriggerEventID != "le-2" || !strings.Contains(v.Detail, "le-1") {
			t.Fatalf("order %v: duplicate is %s (%s), want le-2 duplicating le-1", order, v.TriggerEventID, v.Detail)
		}
	}
}

func TestUniqueForgetsOutsideWindow(t *testing.T) {
	h := newKindHarness(t, "no_duplicate_ledger_effect.yaml")
	h.send("ledger", ledgerEntry("le-1", "k1", "${+0s}"))
	h.at(25*time.Hour + time.Minute) // idle inputs follow the clock past the 24h window
	h.send("ledger", ledgerEntry("le-2", "k1", "${+25h}"))
	h.expect()
}

func paymentEvent(id, status, at string) string {
	return fmt.Sprintf(`{"event_id":"%s-%s-%s","payment_id":"%s","account_id":"a1","status":"%s","amount_cents":500,"occurred_at":"%s"}`, id, status, at, id, status, at)
}

func TestTransitionJudgesEventsInEventTimeOrder(t *testing.T) {
	h := newKindHarness(t, "payment_transitions.yaml")
	// Read out of order but within lateness: fine.
	h.send("payments", paymentEvent("p1", "authorized", "${+1s}"))
	h.send("payments", paymentEvent("p1", "pending", "${+0s}"))
	h.send("payments", paymentEvent("p1", "captured", "${+2s}"))
	h.send("payments", paymentEvent("p1", "captured", "${+2s}")) // redelivered
	// A refund of a payment never captured.
	h.send("payments", paymentEvent("p2", "pending", "${+0s}"))
	h.send("payments", paymentEvent("p2", "refunded", "${+1s}"))
	// Starting anywhere but pending.
	h.send("payments", paymentEvent("p3", "captured", "${+0s}"))
	h.at(time.Minute)
	h.expect("payment_transitions_allowed p2 open", "payment_transitions_allowed p3 open")
	details := map[string]string{}
	for _, v := range h.p.Violations() {
		details[v.Key] = v.Detail
	}
	if details["p2"] != "pending -> refunded" || details["p3"] != "starts in captured" {
		t.Fatalf("details %v", details)
	}
	// Entity state survives a restart: p1 may now be refunded, not re-authorized.
	h.reload()
	h.send("payments", paymentEvent("p1", "refunded", "${+70s}"))
	h.send("payments", paymentEvent("p1", "authorized", "${+71s}"))
	h.at(3 * time.Minute)
	h.expect("payment_transitions_allowed p2 open", "payment_transitions_allowed p3 open", "payment_transitions_allowed p1 open")
}

func entitlement(sub, status, expires, at string) string {
	return fmt.Sprintf(`{"event_id":"%s-%s","subscription_id":"%s","account_id":"a1","subscription_status":"%s","entitlement_expires_at":"%s","occurred_at":"%s"}`, sub, at, sub, status, expires, at)
}

func TestStateRuleFiresPastDeadlineAndRenewalRepairs(t *testing.T) {
	h := newKindHarness(t, "active_subscription_has_valid_entitlement.yaml")
	h.send("accounts", `{"account_id":"a1","tier":"enterprise","mrr_cents":10000}`)
	h.send("entitlements", entitlement("s1", "active", "${+1h}", "${+0s}"))
	h.send("entitlements", entitlement("s2", "active", "${+1h}", "${+0s}"))
	h.send("entitlements", entitlement("s2", "canceled", "${+1h}", "${+30m}")) // canceled in time
	h.send("entitlements", entitlement("s3", "active", "${+1h}", "${+0s}"))
	h.send("entitlements", entitlement("s3", "active", "${+2h}", "${+50m}")) // renewed in time
	h.at(time.Hour + 4*time.Minute)
	h.expect()
	h.at(time.Hour + 6*time.Minute) // past expiry + 5m grace
	h.expect("active_subscription_has_valid_entitlement s1 open")
	v := h.p.Violations()[0]
	if v.Impact != 300 || v.Customer != "a1" {
		t.Fatalf("impact %v customer %q: want 100 USD MRR x3 for an enterprise account", v.Impact, v.Customer)
	}
	// A late renewal resolves it.
	h.reload()
	h.send("entitlements", entitlement("s1", "active", "${+720h}", "${+1h10m}"))
	h.expect("active_subscription_has_valid_entitlement s1 resolved")
}

func order(id, payment, status, at string) string {
	return fmt.Sprintf(`{"event_id":"%s-%s","order_id":"%s","payment_id":"%s","account_id":"a1","status":"%s","occurred_at":"%s"}`, id, status, id, payment, status, at)
}

func TestFulfilledOrderLooksBackForItsCapture(t *testing.T) {
	h := newKindHarness(t, "fulfilled_order_has_captured_payment.yaml")
	h.send("payments", paymentEvent("p1", "captured", "${+0s}"))
	h.send("orders", order("o1", "p1", "fulfilled", "${+1h}")) // captured an hour before: fine
	h.send("payments", paymentEvent("p2", "authorized", "${+0s}"))
	h.send("orders", order("o2", "p2", "fulfilled", "${+1h}")) // never captured
	h.send("orders", order("o3", "p3", "fulfilled", "${+1h}"))
	h.send("payments", paymentEvent("p3", "captured", "${+1h10s}")) // captured just after: fine
	h.at(2 * time.Hour)
	h.expect("fulfilled_order_has_captured_payment p2 open")
	if v := h.p.Violations()[0]; v.Impact != 5 {
		t.Fatalf("impact %v: want the payment's 5.00 from the lookup", v.Impact)
	}
}

// A renewal after the deadline that is read before the watermark passes the
// deadline must not hide the violation: the entity was expired and active in
// between, whatever the read order.
func TestStateRuleJudgesTheStateAsOfTheDeadline(t *testing.T) {
	h := newKindHarness(t, "active_subscription_has_valid_entitlement.yaml")
	h.send("entitlements", entitlement("s4", "active", "${+1h}", "${+0s}"))
	h.send("entitlements", entitlement("s4", "active", "${+720h}", "${+1h10m}"))
	h.send("entitlements", entitlement("s5", "active", "${+1h}", "${+0s}"))
	h.send("entitlements", entitlement("s5", "active", "${+720h}", "${+1h2m}")) // inside the 5m grace
	h.at(2 * time.Hour)
	h.expect("active_subscription_has_valid_entitlement s4 resolved")
}

// flakyRegistry is a value format whose registry can be down: it reads JSON
// values (standing in for a schema-framed format) and, while down, fails
// every decode with rules.ErrSchemaUnavailable, as internal/schema does for
// a schema id it has not fetched when the registry is unreachable.
type flakyRegistry struct{ down bool }

func (f *flakyRegistry) DecodeValue(topic string, value []byte) (rules.Fields, error) {
	if f.down {
		return nil, fmt.Errorf("fetch schema: %w", rules.ErrSchemaUnavailable)
	}
	var p fastjson.Parser
	v, err := p.ParseBytes(value)
	if err != nil {
		return nil, err
	}
	return rules.JSONFields(v), nil
}

// A state check that comes due while the registry cannot serve its stored
// event's schema (a restart during an outage) is judged once it can, never
// dropped.
func TestStateRuleWaitsForTheSchemaOfAStoredEvent(t *testing.T) {
	names := []string{"../../rules/active_subscription_has_valid_entitlement.yaml"}
	src, err := os.ReadFile(names[0])
	if err != nil {
		t.Fatal(err)
	}
	src = regexp.MustCompile(`(?m)^(\s+)topic: (\S+)$`).ReplaceAll(src, []byte("${1}topic: ${2}\n${1}format: avro"))
	rs, err := rules.Parse(names, map[string][]byte{names[0]: src})
	if err != nil {
		t.Fatal(err)
	}
	reg := &flakyRegistry{}
	if err := rs.BindFormats(map[string]rules.ValueFormat{rules.FormatAvro: reg}); err != nil {
		t.Fatal(err)
	}
	h := &kindHarness{t: t, rs: rs, snap: NewMemSnapshot(), now: t0}
	h.reload()
	h.send("accounts", `{"account_id":"a1","tier":"pro","mrr_cents":10000}`)
	h.send("entitlements", entitlement("s1", "active", "${+1h}", "${+0s}"))
	h.at(time.Minute)
	// Restart from the durable state while the registry is down.
	reg.down = true
	h.reload()
	h.at(time.Hour + 6*time.Minute) // past expiry + 5m grace
	h.expect()
	if n := h.p.PendingCount(); n != 1 {
		t.Fatalf("%d checks pending while the registry is down; want the one kept", n)
	}
	reg.down = false
	h.at(time.Hour + 7*time.Minute)
	h.expect("active_subscription_has_valid_entitlement s1 open")
}

// rulesWithout loads an example rule file with the lines containing any of
// drop removed.
func rulesWithout(t *testing.T, file string, drop ...string) *rules.RuleSet {
	t.Helper()
	b, err := os.ReadFile("../../rules/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if !slices.ContainsFunc(drop, func(d string) bool { return strings.Contains(line, d) }) {
			keep = append(keep, line)
		}
	}
	path := t.TempDir() + "/" + file
	if err := os.WriteFile(path, []byte(strings.Join(keep, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.LoadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// An absence rule without redelivery_window remembers its expect events
// for the larger of 15 minutes and ten times within (here 15m, within being
// 30s): a capture read five minutes after its ledger entry's window, far
// past the allowed lateness, finds the entry and is not missing; one read
// after the entry's memory has passed is judged without it and fires.
func TestAbsenceRemembersExpectEventsFifteenMinutesByDefault(t *testing.T) {
	rs := rulesWithout(t, "captured_payment_has_ledger_entry.yaml", "redelivery_window")
	if got := rs.Rules[0].Absence.RedeliveryWindow; got != 15*time.Minute {
		t.Fatalf("default redelivery window %s, want 15m", got)
	}
	h := &kindHarness{t: t, rs: rs, snap: NewMemSnapshot(), now: t0}
	h.reload()
	capture := func(id, at string) string {
		return fmt.Sprintf(`{"event_id":"%s-captured","payment_id":"%s","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"%s"}`, id, id, at)
	}
	entry := func(id, at string) string {
		return fmt.Sprintf(`{"entry_id":"le-%s","payment_id":"%s","account_id":"a1","amount_cents":100,"direction":"credit","occurred_at":"%s"}`, id, id, at)
	}
	// Ledger entries at +10s; payments has input too, so neither stream is blind.
	h.send("ledger", entry("p1", "${+10s}"))
	h.send("ledger", entry("p2", "${+10s}"))
	h.send("payments", `{"event_id":"x-authorized","payment_id":"x","account_id":"a1","status":"authorized","amount_cents":100,"occurred_at":"${+10s}"}`)
	// Five and a half minutes on, the captures' windows (to +30s) are five
	// minutes past, and so is the allowed lateness (5s).
	h.at(5*time.Minute + 30*time.Second)
	if wm := h.p.Watermark(rs.Rules[0].Name); wm.Before(t0.Add(5 * time.Minute)) {
		t.Fatalf("watermark %s: the capture would not be late", wm)
	}
	h.send("payments", capture("p1", "${+0s}"))
	h.at(6 * time.Minute)
	h.expect()
	// Past +10s + lookback + within + 15m the entry of p2 is forgotten.
	h.at(17 * time.Minute)
	h.send("payments", capture("p2", "${+0s}"))
	h.at(18 * time.Minute)
	h.expect("captured_payment_has_ledger_entry p2 open")
}
