// Package sim generates incident scenarios for the example domain, with the
// ground truth of every violation injected and every trap set that must not
// produce one. The same seed always yields the same events.
package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Rule names of the example rules in rules/.
const (
	RuleCapturedPaymentHasLedgerEntry = "captured_payment_has_ledger_entry"
)

// Topics of the example domain.
const (
	TopicPayments = "payments"
	TopicLedger   = "ledger"
)

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
}

// Dataset is a scenario's events, in production order, and its truth.
type Dataset struct {
	Events []Event
	Truth  Truth
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
var Scenarios = []string{"friday-rollback", "clean"}

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
// ledger entry and a stalled queue books some entries after the 30-second
// deadline; then recovery. Traps throughout: ledger entries late but inside
// the window, entries read before their payment, and redelivered captures.
//
// clean: the same traffic and traps with no violation.
func Generate(scenario string, seed uint64, o Options) (*Dataset, error) {
	o = o.withDefaults()
	if scenario != "friday-rollback" && scenario != "clean" {
		return nil, fmt.Errorf("unknown scenario %q (known: %v)", scenario, Scenarios)
	}
	rng := rand.New(rand.NewPCG(seed, 0x1a2b3c4d))
	ds := &Dataset{Truth: Truth{Scenario: scenario, Seed: seed}}
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
	for i := 0; i < o.Payments; i++ {
		at := o.Start.Add(time.Duration(i) * gap)
		acct := fmt.Sprintf("acct-%04d", rng.IntN(o.Accounts))
		pid := fmt.Sprintf("pay-%07d", i)
		amount := int64(500 + rng.IntN(200_000))
		p := payment{Idem: "idem-" + pid, PaymentID: pid, AccountID: acct, Amount: amount, Currency: "USD"}
		emit := func(status string, t time.Time) {
			p.Event, p.Status, p.OccurredAt = pid+"-"+status, status, ts(t)
			add(TopicPayments, acct, t, p)
		}
		emit("pending", at)
		emit("authorized", at.Add(200*time.Millisecond))
		if rng.IntN(10) == 0 {
			emit("canceled", at.Add(400*time.Millisecond))
			continue
		}
		captured := at.Add(400 * time.Millisecond)
		emit("captured", captured)
		if rng.IntN(50) == 0 {
			emit("captured", captured) // a retried producer: the same event again
			ds.Truth.Traps = append(ds.Truth.Traps, Trap{Kind: "redelivered_capture", Key: pid})
		}
		le := ledgerEntry{EntryID: "le-" + pid, Idem: "idem-" + pid, PaymentID: pid, AccountID: acct, Amount: amount, Direction: "credit"}
		book := func(delay time.Duration) {
			t := captured.Add(delay)
			le.OccurredAt = ts(t)
			add(TopicLedger, acct, t, le)
		}
		inIncident := scenario == "friday-rollback" && i >= incidentFrom && i < incidentTo
		switch r := rng.IntN(100); {
		case inIncident && r < 6:
			// A partial write: the payment was captured, the ledger never heard.
			ds.Truth.Violations = append(ds.Truth.Violations, Expected{Rule: RuleCapturedPaymentHasLedgerEntry, Key: pid})
		case inIncident && r < 9:
			// A stalled queue job booked it, but after the deadline.
			book(35*time.Second + time.Duration(rng.IntN(60_000))*time.Millisecond)
			ds.Truth.Violations = append(ds.Truth.Violations, Expected{Rule: RuleCapturedPaymentHasLedgerEntry, Key: pid, Resolved: true})
		case r < 15:
			// Late but inside the window: must not fire.
			book(20*time.Second + time.Duration(rng.IntN(9_500))*time.Millisecond)
			ds.Truth.Traps = append(ds.Truth.Traps, Trap{Kind: "ledger_late_inside_window", Key: pid})
		case r < 18:
			// Booked a moment before the capture event's time: clocks differ.
			book(-time.Duration(rng.IntN(300)) * time.Millisecond)
			ds.Truth.Traps = append(ds.Truth.Traps, Trap{Kind: "ledger_before_capture", Key: pid})
		default:
			book(time.Duration(100+rng.IntN(3000)) * time.Millisecond)
		}
	}
	// Each topic is produced in event-time order, as services emit them; the
	// consumer still reads the two topics at different speeds.
	sort.SliceStable(ds.Events, func(i, j int) bool { return ds.Events[i].Time.Before(ds.Events[j].Time) })
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
