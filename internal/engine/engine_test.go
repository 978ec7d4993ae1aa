package engine

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/violation"
)

var t0 = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)

const ruleName = "captured_payment_has_ledger_entry"

func loadRules(t *testing.T) *rules.RuleSet {
	t.Helper()
	rs, err := rules.LoadFiles("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// harness drives one partition with a stepped clock and keeps its durable
// state in memory, the way the consumer keeps it in Badger.
type harness struct {
	t      *testing.T
	rs     *rules.RuleSet
	p      *Partition
	snap   *MemSnapshot
	now    time.Time
	offset map[string]int64
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, rs: loadRules(t), snap: NewMemSnapshot(), now: t0, offset: map[string]int64{}}
	h.reload()
	return h
}

func (h *harness) reload() {
	h.t.Helper()
	p, err := NewPartition(0, h.rs, h.snap, nil, nil, h.now)
	if err != nil {
		h.t.Fatal(err)
	}
	h.p = p
}

func (h *harness) apply(topic, value string) error {
	h.t.Helper()
	rec := &Record{Topic: topic, Offset: h.offset[topic], Value: []byte(value)}
	h.offset[topic]++
	err := h.p.Apply(rec, h.now)
	h.snap.Apply(h.p.TakeDelta())
	return err
}

func (h *harness) payment(id, status string, at time.Time) {
	h.t.Helper()
	v := fmt.Sprintf(`{"event_id":"%s-%s","payment_id":"%s","account_id":"acct-1","status":"%s","amount_cents":2500,"currency":"USD","occurred_at":"%s"}`,
		id, status, id, status, at.Format(time.RFC3339Nano))
	if err := h.apply("payments", v); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) ledger(paymentID string, at time.Time) {
	h.t.Helper()
	v := fmt.Sprintf(`{"entry_id":"le-%s","payment_id":"%s","account_id":"acct-1","amount_cents":2500,"direction":"credit","occurred_at":"%s"}`,
		paymentID, paymentID, at.Format(time.RFC3339Nano))
	if err := h.apply("ledger", v); err != nil {
		h.t.Fatal(err)
	}
}

// advance moves the clock and lets the partition fire due deadlines.
func (h *harness) advance(d time.Duration) {
	h.now = h.now.Add(d)
	h.p.Advance(h.now)
	h.snap.Apply(h.p.TakeDelta())
}

func (h *harness) violations() map[string]violation.State {
	out := map[string]violation.State{}
	for _, v := range h.p.Violations() {
		out[v.Key] = v.State
	}
	return out
}

func (h *harness) expect(want map[string]violation.State) {
	h.t.Helper()
	got := h.violations()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.t.Fatalf("violations: got %v, want %v", got, want)
	}
}

func TestAbsenceFiresWhenWatermarkPassesDeadline(t *testing.T) {
	h := newHarness(t)
	h.payment("p1", "captured", t0)
	h.ledger("other", t0) // the ledger stream has input too
	// Event time moves on in both streams, but not yet past deadline+lateness.
	h.payment("p2", "authorized", t0.Add(34*time.Second))
	h.ledger("other2", t0.Add(34*time.Second))
	h.advance(time.Second)
	h.expect(map[string]violation.State{})
	h.payment("p3", "authorized", t0.Add(36*time.Second))
	h.ledger("other3", t0.Add(36*time.Second))
	h.advance(time.Second)
	h.expect(map[string]violation.State{"p1": violation.Open})
	v := h.p.Violations()[0]
	if v.Deadline != t0.Add(30*time.Second) || v.Impact != 25 || v.Customer != "acct-1" || v.Source.Topic != "payments" || v.Source.Offset != 0 {
		t.Fatalf("violation fields: %+v", v)
	}
	if v.ID != violation.ID(ruleName, h.rs.Rules[0].Version, "p1", "p1-captured") {
		t.Fatalf("id %s is not the deterministic id", v.ID)
	}
}

func TestLedgerInsideWindowInEitherOrderProducesNothing(t *testing.T) {
	h := newHarness(t)
	h.payment("p1", "captured", t0)
	h.ledger("p1", t0.Add(29*time.Second)) // just inside the window
	h.ledger("p2", t0.Add(2*time.Second))  // read before its payment
	h.payment("p2", "captured", t0.Add(1*time.Second))
	h.payment("p9", "authorized", t0.Add(10*time.Minute))
	h.ledger("p9", t0.Add(10*time.Minute))
	h.advance(time.Second)
	h.expect(map[string]violation.State{})
	if n := h.p.PendingCount(); n != 0 {
		t.Fatalf("pending %d, want 0", n)
	}
}

func TestLateLedgerResolvesViolation(t *testing.T) {
	h := newHarness(t)
	h.payment("p1", "captured", t0)
	h.ledger("x", t0.Add(time.Minute))
	h.payment("x", "authorized", t0.Add(time.Minute))
	h.advance(time.Second)
	h.expect(map[string]violation.State{"p1": violation.Open})
	h.advance(time.Second)
	h.ledger("p1", t0.Add(45*time.Second)) // late: after the deadline
	h.expect(map[string]violation.State{"p1": violation.Resolved})
	v := h.p.Violations()[0]
	if v.ResolvedAt == nil || !v.ResolvedAt.Equal(h.now) || !v.ResolvedByEventTime.Equal(t0.Add(45*time.Second)) {
		t.Fatalf("resolution timestamps: %+v", v)
	}
	if v.DetectedAt.Equal(*v.ResolvedAt) {
		t.Fatalf("detected_at %v must be kept apart from resolved_at", v.DetectedAt)
	}
}

func TestLateLedgerReadBeforeDeadlineIsRecordedResolved(t *testing.T) {
	h := newHarness(t)
	h.payment("p1", "captured", t0)
	h.ledger("p1", t0.Add(40*time.Second)) // outside the window, read early
	h.payment("x", "authorized", t0.Add(time.Minute))
	h.ledger("x", t0.Add(time.Minute))
	h.advance(time.Second)
	h.expect(map[string]violation.State{"p1": violation.Resolved})
}

func TestRedeliveredTriggerYieldsOneViolation(t *testing.T) {
	h := newHarness(t)
	h.payment("p1", "captured", t0)
	h.payment("p1", "captured", t0)
	h.payment("x", "authorized", t0.Add(time.Minute))
	h.ledger("x", t0.Add(time.Minute))
	h.advance(time.Second)
	h.payment("p1", "captured", t0) // redelivered after it was judged
	h.payment("y", "authorized", t0.Add(2*time.Minute))
	h.ledger("y", t0.Add(2*time.Minute))
	h.advance(time.Second)
	if n := len(h.p.Violations()); n != 1 {
		t.Fatalf("got %d violations, want 1", n)
	}
}

func TestIdleInputsAdvanceWithClockOnlyWhenAllIdle(t *testing.T) {
	h := newHarness(t)
	h.now = t0
	h.payment("p1", "captured", t0)
	h.ledger("x", t0)
	h.p.SetCaughtUp("payments", true)
	// The ledger input is not caught up: it may be lagging, so nothing fires
	// however far the clock moves.
	h.advance(5 * time.Minute)
	h.expect(map[string]violation.State{})
	h.p.SetCaughtUp("ledger", true)
	h.advance(time.Second)
	h.expect(map[string]violation.State{"p1": violation.Open})
}

func TestBusyStreamDoesNotAdvanceIdleOne(t *testing.T) {
	h := newHarness(t)
	h.p.SetCaughtUp("payments", true)
	h.p.SetCaughtUp("ledger", true)
	h.ledger("x", t0)
	h.payment("p1", "captured", t0)
	// payments keeps flowing in event time; the ledger stays silent: its
	// watermark holds the rule's, so no "missing ledger" violation is guessed.
	for i := 1; i <= 60; i++ {
		h.now = h.now.Add(time.Second)
		h.payment(fmt.Sprintf("a%d", i), "authorized", t0.Add(time.Duration(i)*time.Second))
	}
	h.advance(0)
	h.expect(map[string]violation.State{})
}

func TestStateSurvivesReload(t *testing.T) {
	h := newHarness(t)
	h.payment("p1", "captured", t0)
	h.payment("p2", "captured", t0)
	h.ledger("p2", t0.Add(50*time.Second)) // late for p2
	h.reload()
	h.ledger("p1", t0.Add(10*time.Second)) // p1's pending came back from state
	h.payment("x", "authorized", t0.Add(2*time.Minute))
	h.ledger("x", t0.Add(2*time.Minute))
	h.advance(time.Second)
	h.expect(map[string]violation.State{"p2": violation.Resolved})
	h.reload()
	h.expect(map[string]violation.State{"p2": violation.Resolved})
	if wm := h.p.Watermark(ruleName); !wm.IsZero() {
		// The watermark is recomputed from persisted event times on Advance.
		t.Fatalf("watermark before advance = %v", wm)
	}
	h.advance(0)
	if wm := h.p.Watermark(ruleName); !wm.Equal(t0.Add(2*time.Minute - 5*time.Second)) {
		t.Fatalf("watermark after reload = %v", wm)
	}
}

func TestMalformedRecordsChangeNothing(t *testing.T) {
	h := newHarness(t)
	cases := map[string]string{
		ReasonMalformed: `{"event_id": "e1", "payment_id":`,
		ReasonBadID:     `{"payment_id":"p1","status":"captured","amount_cents":1,"occurred_at":"2026-11-20T09:00:00Z","account_id":"a"}`,
		ReasonBadTime:   `{"event_id":"e1","payment_id":"p1","status":"captured","amount_cents":1,"occurred_at":"yesterday","account_id":"a"}`,
		ReasonBadImpact: `{"event_id":"e1","payment_id":"p1","status":"captured","amount_cents":"lots","occurred_at":"2026-11-20T09:00:00Z","account_id":"a"}`,
	}
	for reason, value := range cases {
		err := h.apply("payments", value)
		var de *DecodeError
		if !errors.As(err, &de) || de.Reason != reason {
			t.Errorf("%s: got %v", reason, err)
		}
	}
	big := `{"event_id":"e1","payment_id":"p1","status":"captured","amount_cents":1,"occurred_at":"2026-11-20T09:00:00Z","account_id":"a","pad":"` + strings.Repeat("x", MaxValueBytes) + `"}`
	if err := h.apply("payments", big); !errors.As(err, new(*DecodeError)) || err.(*DecodeError).Reason != ReasonOversized {
		t.Errorf("oversized: got %v", err)
	}
	rec := &Record{Topic: "payments", Key: []byte{0xff, 0xfe}, Value: []byte(`{"event_id":"e1","payment_id":"p1","status":"captured","amount_cents":1,"occurred_at":"2026-11-20T09:00:00Z","account_id":"a"}`)}
	if err := h.p.Apply(rec, h.now); !errors.As(err, new(*DecodeError)) || err.(*DecodeError).Reason != ReasonBadKeyBytes {
		t.Errorf("bad key: got %v", err)
	}
	h.snap.Apply(h.p.TakeDelta())
	if h.snap.Len() != 0 || h.p.PendingCount() != 0 {
		t.Fatalf("rejected records changed state: %v", h.snap)
	}
}

// A ledger stream that stalls while payments go on is named blind, and even
// when every input then falls silent the clock does not judge absence the
// monitor could not see. When the ledger catches up it is no longer blind and
// nothing was missing.
func TestStalledLedgerIsBlindAndHoldsVerdicts(t *testing.T) {
	h := newHarness(t)
	h.p.SetCaughtUp("payments", true)
	h.p.SetCaughtUp("ledger", true)
	h.ledger("x", t0)
	for i := 0; i < 180; i += 10 {
		at := t0.Add(time.Duration(i) * time.Second)
		h.payment(fmt.Sprintf("p%d", i), "captured", at)
	}
	h.advance(time.Hour) // everything idle for an hour
	if lag := h.p.Blind()["ledger"]; lag != 170*time.Second {
		t.Fatalf("blind %v, want ledger lagging 170s", h.p.Blind())
	}
	h.expect(map[string]violation.State{})
	for i := 0; i < 180; i += 10 {
		h.ledger(fmt.Sprintf("p%d", i), t0.Add(time.Duration(i+1)*time.Second))
	}
	h.advance(time.Minute)
	if b := h.p.Blind(); len(b) != 0 {
		t.Fatalf("still blind: %v", b)
	}
	h.expect(map[string]violation.State{})
}

// An expectation loaded from state and met in the first batch after the load
// must be deleted from state, or it would come back after the next restart.
func TestLoadedStateRemovedInFirstBatchIsDeleted(t *testing.T) {
	h := newHarness(t)
	h.payment("p1", "captured", t0)
	if h.p.PendingCount() != 1 {
		t.Fatal("no pending expectation")
	}
	h.reload()
	h.ledger("p1", t0.Add(time.Second))
	h.reload()
	if n := h.p.PendingCount(); n != 0 {
		t.Fatalf("after a second reload %d expectations came back", n)
	}
	_ = h.snap.Scan("", "", func(k string, _ []byte) bool {
		if strings.Contains(k, "/d/") {
			t.Fatalf("deadline key %q still in state", k)
		}
		return true
	})
	h.advance(time.Hour)
	h.expect(map[string]violation.State{})
}

// With max_hold, verdicts held for a stalled input are released once it
// lags beyond the hold, and marked as decided while blind.
func TestMaxHoldReleasesVerdictsMarkedBlind(t *testing.T) {
	h := newHarness(t)
	h.rs.Streams["ledger"].MaxHold = 3 * time.Minute
	h.reload()
	h.ledger("x", t0)
	h.payment("p1", "captured", t0)
	for i := 10; i <= 600; i += 10 {
		h.payment(fmt.Sprintf("a%d", i), "authorized", t0.Add(time.Duration(i)*time.Second))
	}
	h.advance(time.Second)
	h.expect(map[string]violation.State{"p1": violation.Open})
	if v := h.p.Violations()[0]; !v.DecidedWhileBlind {
		t.Fatalf("violation not marked as decided while blind: %+v", v)
	}
}
