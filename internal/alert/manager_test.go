package alert

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/quantity"
	"github.com/invmon/invmon/internal/violation"
)

func readyManager(t *testing.T, cfg Config, db *joinstate.Store, rules ...RuleSpec) *testManager {
	t.Helper()
	m := newManager(t, cfg, db, nil)
	if len(rules) == 0 {
		rules = []RuleSpec{paymentRule}
	}
	if err := m.SetRules(rules); err != nil {
		t.Fatalf("SetRules: %v", err)
	}
	m.Seed(nil)
	return m
}

func TestFiringIsResentWithStableStartsAtAndEndsAt(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	m := readyManager(t, testConfig(clk, am.URL()), memDB(t))

	tick(t, m)
	am.expectNone(t) // nothing open, nothing to say

	m.Observe(openViolation(ruleName, "pay-1", "acct-1", 120))
	tick(t, m)
	a := only(t, am.takeOne(t))
	wantLabels := map[string]string{"alertname": ruleName, "severity": "page", "team": "payments"}
	if !maps.Equal(a.Labels, wantLabels) {
		t.Fatalf("labels = %v, want %v", a.Labels, wantLabels)
	}
	mustEqualTime(t, "startsAt", a.StartsAt, t0)
	mustEqualTime(t, "endsAt", a.EndsAt, t0.Add(4*time.Minute))

	clk.Step(30 * time.Second)
	tick(t, m)
	am.expectNone(t) // not due before ResendInterval

	now := clk.Step(30 * time.Second)
	tick(t, m)
	a = only(t, am.takeOne(t))
	mustEqualTime(t, "startsAt after resend", a.StartsAt, t0)
	mustEqualTime(t, "endsAt after resend", a.EndsAt, now.Add(4*time.Minute))

	// A new violation changes the annotations: sent at once, same startsAt.
	now = clk.Step(10 * time.Second)
	m.Observe(openViolation(ruleName, "pay-2", "acct-2", 30))
	tick(t, m)
	a = only(t, am.takeOne(t))
	mustEqualTime(t, "startsAt after change", a.StartsAt, t0)
	mustEqualTime(t, "endsAt after change", a.EndsAt, now.Add(4*time.Minute))
	if a.Annotations["open_violations"] != "2" {
		t.Fatalf("open_violations = %q, want 2", a.Annotations["open_violations"])
	}

	clk.Step(10 * time.Second)
	tick(t, m)
	am.expectNone(t)
}

func TestAnnotationsCarryTheSummaryAndNoEntityInLabels(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	rule := paymentRule
	rule.Name = "payment without/ledger" // needs escaping in generatorURL
	rule.Annotations = map[string]string{
		"dashboard": "https://grafana.example/d/payments",
		"headline":  "{{.Count}} payments without ledger entry, {{printf \"%.0f\" .Total}} {{.ImpactUnit}} at risk",
	}
	m := readyManager(t, testConfig(clk, am.URL()), memDB(t), rule)
	var vs []violation.Violation
	for i, impact := range []float64{5, 700, 40, 700, 3, 90, 1012.5} {
		vs = append(vs, openViolation(rule.Name, fmt.Sprintf("pay-%d", i), fmt.Sprintf("acct-%d", i%3), impact))
	}
	m.Observe(vs...)
	tick(t, m)
	a := only(t, am.takeOne(t))

	for k, v := range a.Labels {
		if strings.Contains(v, "pay-") || strings.Contains(v, "acct-") {
			t.Errorf("label %s=%q carries an entity", k, v)
		}
	}
	want := map[string]string{
		"summary":         "payment without/ledger: 7 open violations, 3 customers, total impact 2,550.50 USD",
		"open_violations": "7",
		"customers":       "3",
		"total_impact":    "2550.50",
		"runbook_url":     "https://runbooks.example/payment-without-ledger",
		"dashboard":       "https://grafana.example/d/payments",
		"headline":        "7 payments without ledger entry, 2550 USD at risk",
		"description": "Rule payment without/ledger has 7 open violations affecting 3 customers with a total impact of 2,550.50 USD.\n" +
			"Top 5 by impact:\n" +
			"- key=pay-6 customer=acct-0 impact=1,012.50 USD\n" +
			"- key=pay-1 customer=acct-1 impact=700.00 USD\n" +
			"- key=pay-3 customer=acct-0 impact=700.00 USD\n" +
			"- key=pay-5 customer=acct-2 impact=90.00 USD\n" +
			"- key=pay-2 customer=acct-2 impact=40.00 USD",
	}
	for k, w := range want {
		if got := a.Annotations[k]; got != w {
			t.Errorf("annotation %s:\n got %q\nwant %q", k, got, w)
		}
	}
	if len(a.Annotations) != len(want) {
		t.Errorf("annotations = %v, want exactly the keys of %v", a.Annotations, want)
	}
	wantURL := externalURL + "/rules/payment%20without%2Fledger"
	if a.GeneratorURL != wantURL {
		t.Errorf("generatorURL = %q, want %q", a.GeneratorURL, wantURL)
	}
}

func TestResolutionIsResentForRetentionThenForgotten(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	db := memDB(t)
	m := readyManager(t, testConfig(clk, am.URL()), db)

	v := openViolation(ruleName, "pay-1", "acct-1", 120)
	m.Observe(v)
	tick(t, m)
	am.takeOne(t)

	resolvedAt := clk.Step(2*time.Minute + 10*time.Second)
	m.Observe(resolve(v, resolvedAt))
	tick(t, m)
	a := only(t, am.takeOne(t))
	mustEqualTime(t, "startsAt", a.StartsAt, t0)
	mustEqualTime(t, "endsAt of the resolution", a.EndsAt, resolvedAt)

	// Re-sent every minute (not every tick) with the same endsAt for 15m.
	sends := 0
	for clk.Now().Before(resolvedAt.Add(20 * time.Minute)) {
		now := clk.Step(30 * time.Second)
		tick(t, m)
		for _, p := range am.take() {
			a := only(t, p.Alerts)
			mustEqualTime(t, "endsAt of a re-sent resolution", a.EndsAt, resolvedAt)
			if now.Sub(resolvedAt) >= 15*time.Minute {
				t.Fatalf("resolution re-sent at +%s, after the 15m retention", now.Sub(resolvedAt))
			}
			sends++
		}
	}
	if sends != 14 { // at +1m … +14m; +0 was the first send
		t.Fatalf("resolution re-sent %d times, want 14", sends)
	}
	if n := countKeys(t, db, stateKeyPrefix); n != 0 {
		t.Fatalf("%d alert states left in badger after retention, want 0", n)
	}
}

func TestEscalationResolvesTicketAndFiresPage(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	rule := paymentRule
	rule.Severity = func(a Aggregate) (string, error) {
		if a.Total >= 1000 || a.Customers >= 25 {
			return "page", nil
		}
		return "ticket", nil
	}
	m := readyManager(t, testConfig(clk, am.URL()), memDB(t), rule)

	small := openViolation(ruleName, "pay-1", "acct-1", 100)
	m.Observe(small)
	tick(t, m)
	a := only(t, am.takeOne(t))
	if a.Labels["severity"] != "ticket" {
		t.Fatalf("severity = %q, want ticket", a.Labels["severity"])
	}

	escalatedAt := clk.Step(5 * time.Second)
	big := openViolation(ruleName, "pay-2", "acct-2", 5000)
	m.Observe(big)
	tick(t, m)
	got := bySeverity(t, am.takeOne(t))
	if len(got) != 2 {
		t.Fatalf("want the ticket resolved and the page firing, got %+v", got)
	}
	mustEqualTime(t, "ticket endsAt", got["ticket"].EndsAt, escalatedAt)
	mustEqualTime(t, "ticket startsAt", got["ticket"].StartsAt, t0)
	mustEqualTime(t, "page startsAt", got["page"].StartsAt, escalatedAt)
	mustEqualTime(t, "page endsAt", got["page"].EndsAt, escalatedAt.Add(4*time.Minute))

	// De-escalation: the page resolves, and the ticket fires again as a new
	// episode with a new startsAt.
	deescalatedAt := clk.Step(5 * time.Second)
	m.Observe(resolve(big, deescalatedAt))
	tick(t, m)
	got = bySeverity(t, am.takeOne(t))
	mustEqualTime(t, "page endsAt", got["page"].EndsAt, deescalatedAt)
	mustEqualTime(t, "ticket startsAt", got["ticket"].StartsAt, deescalatedAt)
	if !got["ticket"].EndsAt.After(deescalatedAt) {
		t.Fatalf("ticket should fire again, endsAt = %s", got["ticket"].EndsAt)
	}
}

func TestSeverityErrorKeepsCurrentSeverityAndEmptyMeansNoAlert(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	var sevErr error
	sev := "ticket"
	rule := paymentRule
	rule.Severity = func(Aggregate) (string, error) { return sev, sevErr }
	m := readyManager(t, testConfig(clk, am.URL()), memDB(t), rule)

	m.Observe(openViolation(ruleName, "pay-1", "acct-1", 100))
	tick(t, m)
	if s := only(t, am.takeOne(t)).Labels["severity"]; s != "ticket" {
		t.Fatalf("severity = %q, want ticket", s)
	}

	sevErr = errors.New("no such attribute")
	clk.Step(time.Minute)
	tick(t, m)
	if s := only(t, am.takeOne(t)).Labels["severity"]; s != "ticket" {
		t.Fatalf("on a severity error the severity became %q, want ticket kept", s)
	}

	sev, sevErr = "", nil
	at := clk.Step(time.Second)
	tick(t, m)
	a := only(t, am.takeOne(t))
	mustEqualTime(t, "endsAt when no tier holds", a.EndsAt, at)
}

func TestAlertmanager5xxIsRetriedWithinOneTick(t *testing.T) {
	am := newRecorder(t)
	am.setStatus(func(n int) (int, string) {
		if n < 2 {
			return http.StatusServiceUnavailable, "overloaded"
		}
		return http.StatusOK, ""
	})
	clk := newClock()
	reg := prometheus.NewRegistry()
	m := newManager(t, testConfig(clk, am.URL()), memDB(t), reg)
	if err := m.SetRules([]RuleSpec{paymentRule}); err != nil {
		t.Fatal(err)
	}
	m.Seed([]violation.Violation{openViolation(ruleName, "pay-1", "acct-1", 100)})
	tick(t, m)

	ps := am.take()
	if len(ps) != 3 {
		t.Fatalf("want 2 failed attempts and 1 success, got %d posts", len(ps))
	}
	for i, p := range ps {
		mustEqualTime(t, fmt.Sprintf("attempt %d startsAt", i), only(t, p.Alerts).StartsAt, t0)
	}
	name := m.clients[0].Name()
	if got := testutil.ToFloat64(m.clients[0].metrics.sends.WithLabelValues(name)); got != 3 {
		t.Errorf("invmon_alert_sends_total = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.clients[0].metrics.failures.WithLabelValues(name)); got != 2 {
		t.Errorf("invmon_alert_send_failures_total = %v, want 2", got)
	}

	clk.Step(time.Second)
	tick(t, m)
	am.expectNone(t) // delivered: nothing due
}

func TestAlertmanager4xxIsNotRetried(t *testing.T) {
	am := newRecorder(t)
	am.setStatus(func(int) (int, string) {
		return http.StatusBadRequest, `{"code":400,"message":"start time must be before end time"}`
	})
	clk := newClock()
	m := readyManager(t, testConfig(clk, am.URL()), memDB(t))
	m.Observe(openViolation(ruleName, "pay-1", "acct-1", 100))

	err := m.Tick(t.Context())
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusBadRequest || !strings.Contains(se.Body, "start time must be before end time") {
		t.Fatalf("Tick error = %v, want a StatusError 400 with the body", err)
	}
	if n := am.requests(); n != 1 {
		t.Fatalf("a 4xx was retried: %d requests", n)
	}

	// Not re-posted on the next ticks (it would be refused again) ...
	clk.Step(time.Second)
	_ = m.Tick(t.Context())
	if n := am.requests(); n != 1 {
		t.Fatalf("a refused alert was re-posted on the next tick: %d requests", n)
	}
	// ... but again at the next resend, in case Alertmanager changed.
	am.setStatus(nil)
	clk.Step(time.Minute)
	tick(t, m)
	if n := am.requests(); n != 2 {
		t.Fatalf("want the refused alert re-posted once at the resend, %d requests", n)
	}
}

func TestUnreachableAlertmanagerGetsTheAlertOnceBack(t *testing.T) {
	am := newRecorder(t)
	am.stop()
	clk := newClock()
	m := readyManager(t, testConfig(clk, am.URL()), memDB(t))

	m.Observe(openViolation(ruleName, "pay-1", "acct-1", 100))
	err := m.Tick(t.Context())
	if err == nil {
		t.Fatal("Tick with Alertmanager down: want an error")
	}
	// Down for longer than a resend interval, ticking every few seconds.
	for range 30 {
		clk.Step(5 * time.Second)
		if err := m.Tick(t.Context()); err == nil {
			t.Fatal("Tick with Alertmanager down: want an error")
		}
	}

	am.restart()
	now := clk.Step(5 * time.Second)
	tick(t, m)
	a := only(t, am.takeOne(t))
	mustEqualTime(t, "startsAt", a.StartsAt, t0)
	mustEqualTime(t, "endsAt", a.EndsAt, now.Add(4*time.Minute))

	clk.Step(5 * time.Second)
	tick(t, m)
	am.expectNone(t)
}

func TestEveryAlertmanagerGetsEveryAlertIndependently(t *testing.T) {
	amA, amB := newRecorder(t), newRecorder(t)
	clk := newClock()
	m := readyManager(t, testConfig(clk, amA.URL(), amB.URL()), memDB(t))

	v := openViolation(ruleName, "pay-1", "acct-1", 100)
	m.Observe(v)
	tick(t, m)
	a, b := only(t, amA.takeOne(t)), only(t, amB.takeOne(t))
	if !maps.Equal(a.Labels, b.Labels) || !maps.Equal(a.Annotations, b.Annotations) || !a.StartsAt.Equal(b.StartsAt) {
		t.Fatalf("Alertmanagers got different alerts:\n%+v\n%+v", a, b)
	}

	// A goes down; B keeps getting updates.
	amA.stop()
	resolvedAt := clk.Step(10 * time.Second)
	m.Observe(resolve(v, resolvedAt))
	if err := m.Tick(t.Context()); err == nil {
		t.Fatal("want an error for the Alertmanager that is down")
	}
	mustEqualTime(t, "B: endsAt", only(t, amB.takeOne(t)).EndsAt, resolvedAt)
	clk.Step(10 * time.Second)
	_ = m.Tick(t.Context())
	amB.expectNone(t)

	// A comes back and gets the resolution it missed, with its own time.
	amA.restart()
	amA.take()
	clk.Step(10 * time.Second)
	tick(t, m)
	mustEqualTime(t, "A: endsAt", only(t, amA.takeOne(t)).EndsAt, resolvedAt)
	amB.expectNone(t)
}

func TestRestartKeepsStartsAtAndPendingResolution(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	dir := t.TempDir()
	cfg := testConfig(clk, am.URL())
	v := openViolation(ruleName, "pay-1", "acct-1", 100)

	db := openDB(t, dir)
	m := readyManager(t, cfg, db)
	m.Observe(v)
	tick(t, m)
	am.takeOne(t)
	// No graceful shutdown beyond releasing Badger's directory lock: every
	// write was already synced.
	_ = m.Close()
	_ = db.Close()

	// Second run: before the rules and open violations are loaded, the
	// alert keeps firing from its persisted state with its startsAt.
	db = openDB(t, dir)
	m = newManager(t, cfg, db, nil)
	clk.Step(30 * time.Second)
	tick(t, m)
	am.expectNone(t) // sent 30s ago by the previous run: not due
	now := clk.Step(40 * time.Second)
	tick(t, m)
	a := only(t, am.takeOne(t))
	mustEqualTime(t, "startsAt after restart", a.StartsAt, t0)
	mustEqualTime(t, "endsAt after restart", a.EndsAt, now.Add(4*time.Minute))

	// The violation was resolved while we were down: Seed does not list it.
	if err := m.SetRules([]RuleSpec{paymentRule}); err != nil {
		t.Fatal(err)
	}
	m.Seed(nil)
	am.setStatus(func(int) (int, string) { return http.StatusBadGateway, "" })
	resolvedAt := clk.Step(time.Second)
	if err := m.Tick(t.Context()); err == nil {
		t.Fatal("want an error while Alertmanager answers 502")
	}
	am.take()
	_ = m.Close()
	_ = db.Close()

	// Third run: the resolution was never delivered; it still is, with the
	// original resolution time.
	am.setStatus(nil)
	db = openDB(t, dir)
	t.Cleanup(func() { _ = db.Close() })
	m = newManager(t, cfg, db, nil)
	clk.Step(3 * time.Second)
	tick(t, m)
	a = only(t, am.takeOne(t))
	mustEqualTime(t, "startsAt of the resolution", a.StartsAt, t0)
	mustEqualTime(t, "endsAt of the resolution", a.EndsAt, resolvedAt)
}

func TestObserveIsIdempotent(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	reg := prometheus.NewRegistry()
	m := newManager(t, testConfig(clk, am.URL()), memDB(t), reg)
	if err := m.SetRules([]RuleSpec{paymentRule}); err != nil {
		t.Fatal(err)
	}
	v1 := openViolation(ruleName, "pay-1", "acct-1", 100)
	v2 := openViolation(ruleName, "pay-2", "acct-1", 50)
	m.Seed([]violation.Violation{v1})
	m.Observe(v1, v2, v2)
	m.Observe(v1)
	tick(t, m)
	a := only(t, am.takeOne(t))
	if a.Annotations["open_violations"] != "2" || a.Annotations["total_impact"] != "150.00" {
		t.Fatalf("after duplicate observes: %v", a.Annotations)
	}

	// Redelivered again: no change, so nothing is sent before the resend.
	clk.Step(time.Second)
	m.Observe(v2, v1)
	tick(t, m)
	am.expectNone(t)

	// A resolution observed twice resolves once; an unknown one is ignored.
	clk.Step(time.Second)
	r2 := resolve(v2, clk.Now())
	m.Observe(r2, r2, resolve(openViolation(ruleName, "pay-9", "", 1), clk.Now()))
	tick(t, m)
	a = only(t, am.takeOne(t))
	if a.Annotations["open_violations"] != "1" || a.Annotations["total_impact"] != "100.00" {
		t.Fatalf("after duplicate resolutions: %v", a.Annotations)
	}
	if got := testutil.ToFloat64(m.metrics.openViolations.WithLabelValues(ruleName)); got != 1 {
		t.Fatalf("invmon_open_violations = %v, want 1", got)
	}
}

func TestNoRuleAlertIsResolvedBeforeSeed(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	db := memDB(t)
	m := newManager(t, testConfig(clk, am.URL()), db, nil)
	if err := m.SetRules([]RuleSpec{paymentRule}); err != nil {
		t.Fatal(err)
	}
	m.Observe(openViolation(ruleName, "pay-1", "acct-1", 100))
	tick(t, m)
	am.expectNone(t) // not seeded: rule alerts are not evaluated yet

	m.Seed([]violation.Violation{openViolation(ruleName, "pay-1", "acct-1", 100)})
	tick(t, m)
	only(t, am.takeOne(t))
}

func TestRemovedRuleResolvesItsAlertAndBadRulesAreRejected(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	reg := prometheus.NewRegistry()
	m := newManager(t, testConfig(clk, am.URL()), memDB(t), reg)
	if err := m.SetRules([]RuleSpec{paymentRule}); err != nil {
		t.Fatal(err)
	}
	m.Seed([]violation.Violation{openViolation(ruleName, "pay-1", "acct-1", 100)})
	tick(t, m)
	am.takeOne(t)

	bad := []RuleSpec{
		{Name: "a", Labels: map[string]string{"payment-id": "x"}},
		{Name: "b", Labels: map[string]string{"severity": "low"}},
		{Name: "c", Annotations: map[string]string{"x": "{{.Count"}},
		{Name: ""},
		{Name: "d"}, {Name: "d"},
	}
	err := m.SetRules(bad)
	if err == nil {
		t.Fatal("SetRules accepted bad rules")
	}
	for _, want := range []string{`"payment-id" is not valid`, `"severity" is set by`, `annotation "x"`, "empty name", `"d": defined twice`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("SetRules error %q does not mention %q", err, want)
		}
	}
	clk.Step(time.Second)
	tick(t, m)
	am.expectNone(t) // the old rules are kept

	if err := m.SetRules([]RuleSpec{{Name: "other"}}); err != nil {
		t.Fatal(err)
	}
	at := clk.Step(time.Second)
	tick(t, m)
	mustEqualTime(t, "endsAt of the removed rule's alert", only(t, am.takeOne(t)).EndsAt, at)
	if n := testutil.CollectAndCount(m.metrics.openViolations); n != 1 {
		t.Fatalf("invmon_open_violations has %d series, want only the current rule's", n)
	}
}

func TestConditionFiresResolvesAndSurvivesRestart(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	dir := t.TempDir()
	cfg := testConfig(clk, am.URL())
	labels := map[string]string{"stream": "ledger"}

	db := openDB(t, dir)
	m := newManager(t, cfg, db, nil)
	err := m.SetCondition("InvariantMonitorBlind", labels,
		map[string]string{"summary": "ledger lags 12m behind payments; absence rules are held"}, true)
	if err != nil {
		t.Fatal(err)
	}
	tick(t, m) // conditions need neither rules nor Seed
	a := only(t, am.takeOne(t))
	want := map[string]string{"alertname": "InvariantMonitorBlind", "severity": "page", "stream": "ledger"}
	if !maps.Equal(a.Labels, want) {
		t.Fatalf("labels = %v, want %v", a.Labels, want)
	}
	mustEqualTime(t, "startsAt", a.StartsAt, t0)
	_ = m.Close()
	_ = db.Close()

	db = openDB(t, dir)
	t.Cleanup(func() { _ = db.Close() })
	m = newManager(t, cfg, db, nil)
	now := clk.Step(time.Minute)
	tick(t, m)
	a = only(t, am.takeOne(t))
	mustEqualTime(t, "startsAt after restart", a.StartsAt, t0)
	mustEqualTime(t, "endsAt after restart", a.EndsAt, now.Add(4*time.Minute))

	if err := m.SetCondition("InvariantMonitorBlind", labels, nil, false); err != nil {
		t.Fatal(err)
	}
	at := clk.Step(time.Second)
	tick(t, m)
	mustEqualTime(t, "endsAt", only(t, am.takeOne(t)).EndsAt, at)

	if err := m.SetCondition("X", map[string]string{"alertname": "Y"}, nil, true); err == nil {
		t.Fatal("a condition may not override alertname")
	}
}

func TestFiringMetric(t *testing.T) {
	am := newRecorder(t)
	clk := newClock()
	m := readyManager(t, testConfig(clk, am.URL()), memDB(t))
	v := openViolation(ruleName, "pay-1", "acct-1", 100)
	m.Observe(v)
	tick(t, m)
	if got := testutil.ToFloat64(m.metrics.firing.WithLabelValues(ruleName, "page")); got != 1 {
		t.Fatalf("invmon_alerts_firing = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.metrics.openImpact.WithLabelValues(ruleName)); got != 100 {
		t.Fatalf("invmon_open_impact = %v, want 100", got)
	}
	m.Observe(resolve(v, clk.Step(time.Second)))
	tick(t, m)
	if n := testutil.CollectAndCount(m.metrics.firing); n != 0 {
		t.Fatalf("invmon_alerts_firing has %d series after resolution, want 0", n)
	}
}

func countKeys(t *testing.T, db *joinstate.Store, prefix string) int {
	t.Helper()
	n := 0
	err := db.Namespace(joinstate.AlertNamespace).Scan(prefix, func(string, []byte) error {
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The fingerprint in logs and Badger keys is the one Alertmanager shows for
// the same label set (value read from Alertmanager 0.25's GET /api/v2/alerts).
func TestFingerprintMatchesAlertmanager(t *testing.T) {
	if got := fingerprint(map[string]string{"alertname": "X", "severity": "page"}); got != "1efb09bd1b43c88a" {
		t.Fatalf("fingerprint = %s, want Alertmanager's 1efb09bd1b43c88a", got)
	}
}

func TestRuleSummaryLeadsTheCountsUnlessItIsATemplate(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		annotations              map[string]string
		wantSummary, wantDescPfx string
	}{
		{
			name:        "plain",
			annotations: map[string]string{"summary": "Captured payments without a ledger entry", "description": "Money moved, books did not."},
			wantSummary: "Captured payments without a ledger entry: 2 open violations, 1 customer, total impact 30.00 USD",
			wantDescPfx: "Money moved, books did not.\n\nRule payment_without_ledger has 2 open violations",
		},
		{
			name:        "template",
			annotations: map[string]string{"summary": "{{.Count}} payments, {{.Total}} {{.ImpactUnit}}"},
			wantSummary: "2 payments, 30 USD",
			wantDescPfx: "Rule payment_without_ledger has 2 open violations",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			am := newRecorder(t)
			rule := paymentRule
			rule.Annotations = tc.annotations
			if err := rule.Validate(); err != nil {
				t.Fatal(err)
			}
			m := readyManager(t, testConfig(newClock(), am.URL()), memDB(t), rule)
			m.Observe(openViolation(ruleName, "pay-1", "acct-1", 10), openViolation(ruleName, "pay-2", "acct-1", 20))
			tick(t, m)
			a := only(t, am.takeOne(t))
			if a.Annotations["summary"] != tc.wantSummary {
				t.Errorf("summary = %q, want %q", a.Annotations["summary"], tc.wantSummary)
			}
			if !strings.HasPrefix(a.Annotations["description"], tc.wantDescPfx) {
				t.Errorf("description = %q, want it to start with %q", a.Annotations["description"], tc.wantDescPfx)
			}
		})
	}
	if err := (RuleSpec{Name: "r", Annotations: map[string]string{"x": "{{ $value }}"}}).Validate(); err == nil {
		t.Error("Validate accepted a template with an undefined variable")
	}
}

// A rule without impact.value counts violations: its alert states the count
// and never a "total impact" that would read as money; an amount summed from
// floats is printed in its unit's precision, never with binary noise.
func TestImpactReadsInItsUnit(t *testing.T) {
	for _, tc := range []struct {
		name        string
		unit        quantity.Unit
		impacts     []float64
		wantSummary string
		wantTotal   string
	}{
		{"count", quantity.Count, []float64{1, 1, 1}, "payment_without_ledger: 3 open violations, 2 customers", ""},
		{"money", quantity.UnitOf("USD", true), []float64{0.1, 0.2, 60736.38}, "payment_without_ledger: 3 open violations, 2 customers, total impact 60,736.68 USD", "60736.68"},
		{"yen", quantity.UnitOf("JPY", true), []float64{1000.4, 2000.4, 0.4}, "payment_without_ledger: 3 open violations, 2 customers, total impact 3,001 JPY", "3001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			am := newRecorder(t)
			rule := paymentRule
			rule.Impact = tc.unit
			m := readyManager(t, testConfig(newClock(), am.URL()), memDB(t), rule)
			for i, impact := range tc.impacts {
				m.Observe(openViolation(ruleName, fmt.Sprintf("pay-%d", i), fmt.Sprintf("acct-%d", i%2), impact))
			}
			tick(t, m)
			a := only(t, am.takeOne(t))
			if a.Annotations["summary"] != tc.wantSummary {
				t.Errorf("summary = %q, want %q", a.Annotations["summary"], tc.wantSummary)
			}
			if a.Annotations["total_impact"] != tc.wantTotal {
				t.Errorf("total_impact = %q, want %q", a.Annotations["total_impact"], tc.wantTotal)
			}
			if tc.unit.Counted && strings.Contains(a.Annotations["description"], "impact") {
				t.Errorf("a count reads as an impact: %q", a.Annotations["description"])
			}
		})
	}
}
