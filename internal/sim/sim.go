// Package sim generates incident scenarios for the example domain, with the
// ground truth of every violation injected and every trap set that must not
// produce one. The same seed always yields the same events.
package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Rule names of the example rules in rules/.
const (
	RuleCapturedPaymentHasLedgerEntry = "captured_payment_has_ledger_entry"
	RuleNoDuplicateLedgerEffect       = "no_duplicate_ledger_effect"
	RulePaymentTransitionsAllowed     = "payment_transitions_allowed"
	RuleFulfilledOrderHasCapture      = "fulfilled_order_has_captured_payment"
	RuleActiveSubscriptionEntitled    = "active_subscription_has_valid_entitlement"
)

// Topics of the example domain.
const (
	TopicPayments     = "payments"
	TopicLedger       = "ledger"
	TopicOrders       = "orders"
	TopicEntitlements = "entitlements"
	TopicAccounts     = "accounts"
)

// Topics lists every topic of the example domain.
var Topics = []string{TopicPayments, TopicLedger, TopicOrders, TopicEntitlements, TopicAccounts}

// Event is one record to produce.
type Event struct {
	Topic string
	Key   string
	Value []byte
	Time  time.Time
}

// Expected is one violation the scenario injected.
type Expected struct {
	Rule string `json:"rule"`
	Key  string `json:"key"`
	// Resolved is true when a late event repairs the violation.
	Resolved bool `json:"resolved"`
}

// Trap is disorder that must not produce a violation.
type Trap struct {
	Kind string `json:"kind"`
	Key  string `json:"key"`
}

// Truth is what a correct monitor reports for a scenario.
type Truth struct {
	Scenario   string     `json:"scenario"`
	Seed       uint64     `json:"seed"`
	Events     int        `json:"events"`
	Violations []Expected `json:"violations"`
	Traps      []Trap     `json:"traps"`
	// Checks is, per example rule, how many checks a correct monitor counts
	// (invmon_checks_total) once the deadlines in the data have passed: one
	// per capture (absence, captured payment), per fulfilled order (absence,
	// fulfilled order), per ledger entry (unique), per payment event
	// (transition) and per subscription (state: its first entitlement is
	// judged at expiry or passed by a renewal or cancellation in time).
	// Redelivered copies are not checks. Renewed entitlements last 30 days
	// and are not judged within that horizon.
	Checks map[string]int `json:"checks"`
}

// Dataset is a scenario's events, in production order, and its truth.
type Dataset struct {
	Events []Event
	Truth  Truth
	// StallFrom and StallTo bound, in event time, the ledger entries whose
	// producer stalls (lagging-ledger); zero otherwise.
	StallFrom, StallTo time.Time
}

// Phases splits the events into what is produced before a ledger stall,
// during it (everything but the ledger), and after it (the stalled ledger
// entries catching up, then the rest). Without a stall it is one phase.
func (ds *Dataset) Phases() [][]Event {
	if ds.StallFrom.IsZero() {
		return [][]Event{ds.Events}
	}
	var before, during, caughtUp, after []Event
	for _, e := range ds.Events {
		switch {
		case e.Time.Before(ds.StallFrom):
			before = append(before, e)
		case e.Time.Before(ds.StallTo) && strings.HasSuffix(e.Topic, TopicLedger):
			caughtUp = append(caughtUp, e)
		case e.Time.Before(ds.StallTo):
			during = append(during, e)
		default:
			after = append(after, e)
		}
	}
	return [][]Event{before, during, append(caughtUp, after...)}
}

// Options shape a scenario.
type Options struct {
	// Payments is how many payments to simulate. Default 5000.
	Payments int
	// Accounts is how many customer accounts pay. Default 300.
	Accounts int
	// Start is the event time of the first event.
	// Default 2026-11-20T09:00:00Z.
	Start time.Time
	// Rate is payments per second of event time. Default 20.
	Rate float64
}

func (o Options) withDefaults() Options {
	if o.Payments == 0 {
		o.Payments = 5000
	}
	if o.Accounts == 0 {
		o.Accounts = 300
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	}
	if o.Rate == 0 {
		o.Rate = 20
	}
	return o
}

// Scenarios lists the scenario names Generate knows.
var Scenarios = []string{"friday-rollback", "clean", "lagging-ledger"}

type payment struct {
	Event      string `json:"event_id"`
	Idem       string `json:"idempotency_key"`
	PaymentID  string `json:"payment_id"`
	AccountID  string `json:"account_id"`
	Status     string `json:"status"`
	Amount     int64  `json:"amount_cents"`
	Currency   string `json:"currency"`
	OccurredAt string `json:"occurred_at"`
}

type order struct {
	Event      string `json:"event_id"`
	OrderID    string `json:"order_id"`
	AccountID  string `json:"account_id"`
	PaymentID  string `json:"payment_id"`
	Status     string `json:"status"`
	OccurredAt string `json:"occurred_at"`
}

type entitlement struct {
	Event          string `json:"event_id"`
	SubscriptionID string `json:"subscription_id"`
	AccountID      string `json:"account_id"`
	Status         string `json:"subscription_status"`
	ExpiresAt      string `json:"entitlement_expires_at"`
	OccurredAt     string `json:"occurred_at"`
}

type account struct {
	AccountID string `json:"account_id"`
	Tier      string `json:"tier"`
	MRRCents  int64  `json:"mrr_cents"`
}

type ledgerEntry struct {
	EntryID    string `json:"entry_id"`
	Idem       string `json:"idempotency_key"`
	PaymentID  string `json:"payment_id"`
	AccountID  string `json:"account_id"`
	Amount     int64  `json:"amount_cents"`
	Direction  string `json:"direction"`
	OccurredAt string `json:"occurred_at"`
}

// Generate builds a scenario.
//
// friday-rollback: a normal baseline, then an incident window (the middle
// third of the run) in which partial writes leave captured payments with no
// ledger entry, a stalled queue books some entries after the 30-second
// deadline, retries book a second ledger entry under one idempotency key, a
// replayed job moves captured payments back to pending, orders are fulfilled
// for payments never captured, and subscription renewals never apply; then
// recovery. Traps throughout: ledger entries late but inside the window or
// stamped before their capture, redelivered captures and ledger entries,
// events delivered out of order within the allowed lateness, captures read
// after their order's fulfilment, renewals inside the grace period and
// cancellations before expiry.
//
// clean: the same traffic and traps with no violation.
func Generate(scenario string, seed uint64, o Options) (*Dataset, error) {
	o = o.withDefaults()
	if !slices.Contains(Scenarios, scenario) {
		return nil, fmt.Errorf("unknown scenario %q (known: %v)", scenario, Scenarios)
	}
	rng := rand.New(rand.NewPCG(seed, 0x1a2b3c4d))
	ds := &Dataset{Truth: Truth{Scenario: scenario, Seed: seed, Checks: map[string]int{
		RuleCapturedPaymentHasLedgerEntry: 0, RuleNoDuplicateLedgerEffect: 0, RulePaymentTransitionsAllowed: 0,
		RuleFulfilledOrderHasCapture: 0, RuleActiveSubscriptionEntitled: 0,
	}}}
	checks := ds.Truth.Checks
	gap := time.Duration(float64(time.Second) / o.Rate)
	incidentFrom, incidentTo := o.Payments/3, 2*o.Payments/3
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	add := func(topic, key string, t time.Time, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err) // plain structs always encode
		}
		ds.Events = append(ds.Events, Event{Topic: topic, Key: key, Value: b, Time: t})
	}
	expect := func(rule, key string, resolved bool) {
		ds.Truth.Violations = append(ds.Truth.Violations, Expected{Rule: rule, Key: key, Resolved: resolved})
	}
	trap := func(kind, key string) { ds.Truth.Traps = append(ds.Truth.Traps, Trap{Kind: kind, Key: key}) }

	// The accounts reference table comes first, as a compacted topic would.
	for a := 0; a < o.Accounts; a++ {
		acct := fmt.Sprintf("acct-%04d", a)
		tier := []string{"free", "pro", "pro", "enterprise"}[rng.IntN(4)]
		add(TopicAccounts, acct, o.Start.Add(-time.Hour), account{AccountID: acct, Tier: tier, MRRCents: int64(1000 + rng.IntN(50_000))})
	}
	for i := 0; i < o.Payments; i++ {
		at := o.Start.Add(time.Duration(i) * gap)
		acct := fmt.Sprintf("acct-%04d", rng.IntN(o.Accounts))
		pid := fmt.Sprintf("pay-%07d", i)
		amount := int64(500 + rng.IntN(200_000))
		inIncident := scenario == "friday-rollback" && i >= incidentFrom && i < incidentTo
		p := payment{Idem: "idem-" + pid, PaymentID: pid, AccountID: acct, Amount: amount, Currency: "USD"}
		emit := func(status string, t time.Time) {
			p.Event, p.Status, p.OccurredAt = pid+"-"+status+"-"+strconv.FormatInt(t.UnixMilli(), 10), status, ts(t)
			add(TopicPayments, acct, t, p)
			checks[RulePaymentTransitionsAllowed]++
			if status == "captured" {
				checks[RuleCapturedPaymentHasLedgerEntry]++
			}
		}
		fulfil := func(t time.Time) {
			oid := "ord-" + pid
			add(TopicOrders, acct, t.Add(-time.Minute), order{Event: oid + "-created", OrderID: oid, AccountID: acct, PaymentID: pid, Status: "created", OccurredAt: ts(t.Add(-time.Minute))})
			add(TopicOrders, acct, t, order{Event: oid + "-fulfilled", OrderID: oid, AccountID: acct, PaymentID: pid, Status: "fulfilled", OccurredAt: ts(t)})
			checks[RuleFulfilledOrderHasCapture]++
		}
		emit("pending", at)
		emit("authorized", at.Add(200*time.Millisecond))
		if rng.IntN(10) == 0 {
			emit("canceled", at.Add(400*time.Millisecond))
			if inIncident && rng.IntN(3) == 0 {
				// Shipped although the payment was canceled.
				fulfil(at.Add(2 * time.Minute))
				expect(RuleFulfilledOrderHasCapture, pid, false)
			}
			continue
		}
		captured := at.Add(400 * time.Millisecond)
		emit("captured", captured)
		if rng.IntN(50) == 0 {
			// A retried producer: the same event again.
			ds.Events = append(ds.Events, ds.Events[len(ds.Events)-1])
			trap("redelivered_capture", pid)
		}
		if inIncident && rng.IntN(50) == 0 {
			// A replayed queue job writes an old state over a newer one.
			emit("pending", captured.Add(2*time.Second))
			expect(RulePaymentTransitionsAllowed, pid, false)
		}
		switch r := rng.IntN(10); {
		case r < 3:
			fulfil(captured.Add(time.Duration(1+rng.IntN(600)) * time.Second))
		case r == 3:
			// The fulfilment is read before the capture it depends on.
			fulfil(captured.Add(-time.Duration(1+rng.IntN(20)) * time.Second))
			trap("capture_after_fulfilment", pid)
		}
		le := ledgerEntry{EntryID: "le-" + pid, Idem: "idem-" + pid, PaymentID: pid, AccountID: acct, Amount: amount, Direction: "credit"}
		book := func(delay time.Duration) time.Time {
			t := captured.Add(delay)
			le.OccurredAt = ts(t)
			add(TopicLedger, acct, t, le)
			checks[RuleNoDuplicateLedgerEffect]++
			return t
		}
		var booked time.Time
		switch r := rng.IntN(100); {
		case inIncident && r < 6:
			// A partial write: the payment was captured, the ledger never heard.
			expect(RuleCapturedPaymentHasLedgerEntry, pid, false)
			continue
		case inIncident && r < 9:
			// A stalled queue job booked it, but after the deadline.
			booked = book(35*time.Second + time.Duration(rng.IntN(60_000))*time.Millisecond)
			expect(RuleCapturedPaymentHasLedgerEntry, pid, true)
		case r < 15:
			booked = book(20*time.Second + time.Duration(rng.IntN(9_500))*time.Millisecond)
			trap("ledger_late_inside_window", pid)
		case r < 18:
			// Stamped a moment before the capture: producers' clocks differ.
			booked = book(-time.Duration(rng.IntN(300)) * time.Millisecond)
			trap("ledger_before_capture", pid)
		default:
			booked = book(time.Duration(100+rng.IntN(3000)) * time.Millisecond)
		}
		switch r := rng.IntN(100); {
		case inIncident && r < 4:
			// A retried request books a second entry under the same key.
			le.EntryID = "le-" + pid + "-retry"
			retried := booked.Add(time.Duration(1+rng.IntN(30)) * time.Second)
			le.OccurredAt = ts(retried)
			add(TopicLedger, acct, retried, le)
			checks[RuleNoDuplicateLedgerEffect]++
			expect(RuleNoDuplicateLedgerEffect, "idem-"+pid, false)
		case r < 6:
			ds.Events = append(ds.Events, ds.Events[len(ds.Events)-1])
			trap("redelivered_ledger_entry", pid)
		}
	}
	// Subscriptions start across the first half of the run; each entitlement
	// lasts an hour and is normally renewed before it expires.
	span := time.Duration(o.Payments) * gap
	subs := o.Payments / 10
	for s := 0; s < subs; s++ {
		acct := fmt.Sprintf("acct-%04d", rng.IntN(o.Accounts))
		sid := fmt.Sprintf("sub-%06d", s)
		start := o.Start.Add(time.Duration(rng.Int64N(int64(span/2) + 1)))
		expires := start.Add(time.Hour)
		ent := func(status string, at, exp time.Time) {
			add(TopicEntitlements, acct, at, entitlement{Event: sid + "-" + strconv.FormatInt(at.UnixMilli(), 10), SubscriptionID: sid,
				AccountID: acct, Status: status, ExpiresAt: ts(exp), OccurredAt: ts(at)})
		}
		ent("active", start, expires)
		checks[RuleActiveSubscriptionEntitled]++
		inIncident := scenario == "friday-rollback" && s >= subs/3 && s < 2*subs/3
		switch r := rng.IntN(100); {
		case inIncident && r < 15:
			// The renewal never applied: active, and expired.
			expect(RuleActiveSubscriptionEntitled, sid, false)
		case inIncident && r < 22:
			// Renewed, but only ten minutes after the entitlement lapsed.
			ent("active", expires.Add(10*time.Minute), expires.Add(30*24*time.Hour))
			expect(RuleActiveSubscriptionEntitled, sid, true)
		case r < 35:
			ent("canceled", start.Add(30*time.Minute), expires)
			trap("canceled_before_expiry", sid)
		case r < 45:
			ent("active", expires.Add(2*time.Minute), expires.Add(30*24*time.Hour))
			trap("renewed_within_grace", sid)
		default:
			ent("active", expires.Add(-10*time.Minute), expires.Add(30*24*time.Hour))
		}
	}
	// Services emit in event-time order; then a little disorder, as networks
	// and retries add: neighbours less than a second apart swap places, well
	// inside the 5s allowed lateness.
	sort.SliceStable(ds.Events, func(i, j int) bool { return ds.Events[i].Time.Before(ds.Events[j].Time) })
	for i := 1; i < len(ds.Events); i++ {
		a, b := &ds.Events[i-1], &ds.Events[i]
		if b.Time.Sub(a.Time) < time.Second && rng.IntN(20) == 0 {
			*a, *b = *b, *a
			if len(ds.Truth.Traps) < 1<<20 {
				trap("reordered_within_lateness", b.Key)
			}
			i++
		}
	}
	if scenario == "lagging-ledger" {
		// A third into the run the ledger's producer stalls for six minutes
		// of event time while payments go on; then it catches up. Nothing is
		// missing: the truth is no violation, and one InvariantMonitorBlind
		// alert while it lags (its max_lag is 2m).
		span := time.Duration(o.Payments) * gap
		ds.StallFrom = o.Start.Add(span / 3)
		ds.StallTo = ds.StallFrom.Add(6 * time.Minute)
		trap("ledger_producer_stalled", TopicLedger)
	}
	ds.Truth.Events = len(ds.Events)
	return ds, nil
}

// Produce writes the events to Kafka, keyed by account, and waits for every
// acknowledgement.
func Produce(ctx context.Context, cl *kgo.Client, events []Event) error {
	errs := make(chan error, 1)
	for i := range events {
		e := &events[i]
		r := &kgo.Record{Topic: e.Topic, Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	select {
	case err := <-errs:
		return fmt.Errorf("produce: %w", err)
	default:
		return nil
	}
}

// ProduceLive writes the events as a live system would: each one when the
// wall clock reaches its event time (events already due go at once), so a
// monitor reading them sees event time and wall time agree. It returns when
// the last one is acknowledged.
func ProduceLive(ctx context.Context, cl *kgo.Client, events []Event) error {
	const tick = 20 * time.Millisecond
	for len(events) > 0 {
		now := time.Now()
		n := 0
		for n < len(events) && !events[n].Time.After(now) {
			n++
		}
		if n > 0 {
			if err := Produce(ctx, cl, events[:n]); err != nil {
				return err
			}
			events = events[n:]
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(tick, time.Until(events[0].Time))):
		}
	}
	return nil
}
