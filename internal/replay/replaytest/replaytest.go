// Package replaytest holds what the replay tests share: the example rules
// rewritten for a test's topics, and the simulator's ground truth restricted
// to a replay window.
package replaytest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/invmon/invmon/internal/sim"
	examplerules "github.com/invmon/invmon/rules"
)

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// WriteRules writes the example rule files into dir with every topic
// prefixed, and returns a glob matching them.
func WriteRules(t TB, dir, prefix string) string {
	t.Helper()
	names, sources, err := examplerules.Files()
	if err != nil {
		t.Fatalf("example rules: %v", err)
	}
	for _, name := range names {
		s := string(sources[name])
		for _, topic := range sim.Topics {
			s = strings.ReplaceAll(s, "topic: "+topic+"\n", "topic: "+prefix+topic+"\n")
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(name)), []byte(s), 0o644); err != nil {
			t.Fatalf("write rules: %v", err)
		}
	}
	return filepath.Join(dir, "*.yaml")
}

// Prefix returns the dataset's events with every topic prefixed.
func Prefix(events []sim.Event, prefix string) []sim.Event {
	out := make([]sim.Event, len(events))
	for i, e := range events {
		e.Topic = prefix + e.Topic
		out[i] = e
	}
	return out
}

// Violation is one expected finding: rule, entity key, whether a late event
// resolved it, and the event time of the event that triggers it.
type Violation struct {
	Rule      string
	Key       string
	Resolved  bool
	EventTime time.Time
}

// TruthInWindow returns the ground truth's violations whose triggering event
// has an event time in [from, to): the replay's definition of a finding. The
// trigger is found in the dataset by the rules' semantics: the capture of a
// payment without ledger entry, the later of two ledger entries under one
// idempotency key, the event that moved a payment backwards (its latest
// pending), the fulfilment of an order, and the first (active) event of a
// subscription whose entitlement lapsed.
func TruthInWindow(ds *sim.Dataset, from, to time.Time) ([]Violation, error) {
	type ev struct {
		topic string
		t     time.Time
		v     map[string]any
	}
	var events []ev
	for _, e := range ds.Events {
		var v map[string]any
		if err := json.Unmarshal(e.Value, &v); err != nil {
			return nil, fmt.Errorf("decode simulated event: %w", err)
		}
		topic := e.Topic
		for _, base := range sim.Topics {
			if strings.HasSuffix(topic, base) {
				topic = base
			}
		}
		events = append(events, ev{topic, e.Time, v})
	}
	str := func(v map[string]any, k string) string { s, _ := v[k].(string); return s }
	var out []Violation
	for _, x := range ds.Truth.Violations {
		var at time.Time
		pick := func(match func(e ev) bool, latest bool) {
			for _, e := range events {
				if !match(e) {
					continue
				}
				if at.IsZero() || (latest && e.t.After(at)) || (!latest && e.t.Before(at)) {
					at = e.t
				}
			}
		}
		switch x.Rule {
		case sim.RuleCapturedPaymentHasLedgerEntry:
			pick(func(e ev) bool {
				return e.topic == sim.TopicPayments && str(e.v, "payment_id") == x.Key && str(e.v, "status") == "captured"
			}, false)
		case sim.RuleNoDuplicateLedgerEffect:
			pick(func(e ev) bool { return e.topic == sim.TopicLedger && str(e.v, "idempotency_key") == x.Key }, true)
		case sim.RulePaymentTransitionsAllowed:
			pick(func(e ev) bool {
				return e.topic == sim.TopicPayments && str(e.v, "payment_id") == x.Key && str(e.v, "status") == "pending"
			}, true)
		case sim.RuleFulfilledOrderHasCapture:
			pick(func(e ev) bool {
				return e.topic == sim.TopicOrders && str(e.v, "payment_id") == x.Key && str(e.v, "status") == "fulfilled"
			}, false)
		case sim.RuleActiveSubscriptionEntitled:
			pick(func(e ev) bool { return e.topic == sim.TopicEntitlements && str(e.v, "subscription_id") == x.Key }, false)
		default:
			return nil, fmt.Errorf("no trigger known for rule %s", x.Rule)
		}
		if at.IsZero() {
			return nil, fmt.Errorf("no triggering event for %s %s in the dataset", x.Rule, x.Key)
		}
		if !at.Before(from) && at.Before(to) {
			out = append(out, Violation{Rule: x.Rule, Key: x.Key, Resolved: x.Resolved, EventTime: at})
		}
	}
	return out, nil
}

// LineDiff lists, up to 40, the lines where a and b differ, for failure
// messages that compare two reports.
func LineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < max(len(al), len(bl)) && len(out) < 40; i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, x, y))
		}
	}
	return strings.Join(out, "\n")
}
