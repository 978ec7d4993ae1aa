package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
)

// TestChecksAndViolationsEqualTheSimulatorsCounts holds the SLI counters to
// the scenario's ground truth: per rule, invmon_checks_total is exactly the
// number of things the simulator made the rule judge (captures, fulfilled
// orders, ledger entries, payment events, subscriptions) and
// invmon_violations_total exactly the violations it injected, in order and
// under reordering and redelivery.
func TestChecksAndViolationsEqualTheSimulatorsCounts(t *testing.T) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, scenario := range []string{"friday-rollback", "clean"} {
		for seed := uint64(1); seed <= 2; seed++ {
			ds, err := sim.Generate(scenario, seed, sim.Options{Payments: 1500})
			if err != nil {
				t.Fatal(err)
			}
			wantViolations := map[string]int{}
			for _, v := range ds.Truth.Violations {
				wantViolations[v.Rule]++
			}
			orders := map[string][]sim.Event{"in order": ds.Events}
			orders["disordered"] = disorder(ds.Events, rand.New(rand.NewPCG(seed, 7)))
			for name, events := range orders {
				t.Run(fmt.Sprintf("%s/seed%d/%s", scenario, seed, name), func(t *testing.T) {
					m := countEvents(t, rs, events)
					for _, r := range rs.Rules {
						checks := int(testutil.ToFloat64(m.Checks.WithLabelValues(r.Name)))
						violations := int(testutil.ToFloat64(m.Violations.WithLabelValues(r.Name)))
						want, ok := ds.Truth.Checks[r.Name]
						if !ok {
							t.Fatalf("the truth has no check count for %s", r.Name)
						}
						if checks != want || violations != wantViolations[r.Name] {
							t.Errorf("%s: %d checks, %d violations; the simulator knows %d and %d",
								r.Name, checks, violations, want, wantViolations[r.Name])
						}
						if want == 0 {
							t.Errorf("%s: the scenario makes it judge nothing", r.Name)
						}
					}
				})
			}
		}
	}
}

// countEvents applies events to one partition holding every rule, advancing
// as the consumer does, then runs the clock two days on, far enough for every
// deadline in the scenario and short of the renewed entitlements' 30 days.
func countEvents(t *testing.T, rs *rules.RuleSet, events []sim.Event) *Metrics {
	t.Helper()
	m := NewMetrics(nil)
	snap := NewMemSnapshot()
	start := events[0].Time
	p, err := NewPartition(0, rs, snap, m, nil, start)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range p.Topics() {
		p.SetCaughtUp(topic, true)
	}
	now, last := start, start
	for i, e := range events {
		if e.Time.After(now) {
			now = e.Time
		}
		last = now
		rec := &Record{Topic: e.Topic, Offset: int64(i), Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}
		if err := p.Apply(rec, now); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if i%50 == 0 {
			p.Advance(now)
			snap.Apply(p.TakeDelta())
		}
	}
	for _, d := range []time.Duration{time.Minute, time.Hour, 48 * time.Hour} {
		p.Advance(last.Add(d))
		snap.Apply(p.TakeDelta())
	}
	return m
}

// A trigger met by an expected event is one check, also when the trigger is
// redelivered after a restart: which triggers an expected event met is part
// of the durable state.
func TestRedeliveredTriggerIsOneCheckAcrossRestarts(t *testing.T) {
	h := newKindHarness(t, "captured_payment_has_ledger_entry.yaml")
	checks := func() int {
		return int(testutil.ToFloat64(h.p.metrics.Checks.WithLabelValues("captured_payment_has_ledger_entry")))
	}
	h.send("ledger", `{"entry_id":"l1","payment_id":"p1","occurred_at":"${+0s}"}`)
	h.send("payments", paymentEvent("p1", "captured", "${+1s}")) // met at once
	h.send("payments", paymentEvent("p2", "captured", "${+1s}"))
	h.send("ledger", `{"entry_id":"l2","payment_id":"p2","occurred_at":"${+3s}"}`) // met while pending
	h.send("payments", paymentEvent("p1", "captured", "${+1s}"))
	if got := checks(); got != 2 {
		t.Fatalf("%d checks, want 2", got)
	}
	h.reload()
	before := checks()
	h.send("payments", paymentEvent("p1", "captured", "${+1s}"))
	h.send("payments", paymentEvent("p2", "captured", "${+1s}"))
	h.send("payments", paymentEvent("p3", "captured", "${+2s}"))
	h.at(time.Minute) // p3's deadline passes: a violation, one check
	if got := checks() - before; got != 1 {
		t.Fatalf("after a restart: %d new checks, want 1 (p3)", got)
	}
	h.expect("captured_payment_has_ledger_entry p3 open")
}
