package slo_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/slo"
)

func load(t *testing.T, body string) *rules.RuleSet {
	t.Helper()
	f := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.LoadFiles(f)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

const twoRules = `
streams:
  ledger: {topic: ledger, id: event.entry_id, key: event.payment_id, time: timestamp(event.occurred_at)}
rules:
  - name: with_slo
    kind: unique
    on: {stream: ledger, key: event.idempotency_key}
    window: 1h
    objective: 0.99
    slo_window: 7d
    labels: {team: payments}
    annotations: {runbook_url: https://runbooks.example.com/x}
  - name: without_slo
    kind: unique
    on: {stream: ledger}
    window: 1h
`

func TestGenerateScalesWindowsAndKeepsNames(t *testing.T) {
	f, without, err := slo.Generate(load(t, twoRules), slo.Options{WindowScale: 1.0 / 60, EvaluationInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(without) != 1 || without[0] != "without_slo" {
		t.Fatalf("rules without objective: %v", without)
	}
	if len(f.Groups) != 1 || f.Groups[0].Interval == nil || time.Duration(*f.Groups[0].Interval) != time.Second {
		t.Fatalf("groups: %+v", f.Groups)
	}
	byName := map[string]slo.Rule{}
	var alerts []slo.Rule
	for _, r := range f.Groups[0].Rules {
		if r.Alert != "" {
			alerts = append(alerts, r)
			continue
		}
		byName[r.Record] = r
	}
	// An hour becomes a minute in the expression, not in the name.
	if r := byName["invmon_slo:sli_error:ratio_rate1h"]; !strings.Contains(r.Expr, "[1m])") || !strings.Contains(r.Expr, `invmon_checks_total{rule="with_slo"}`) {
		t.Fatalf("1h ratio: %q", r.Expr)
	}
	if r := byName["invmon_slo:sli_error:ratio_period"]; !strings.Contains(r.Expr, "[2h48m])") || r.Labels["slo_window"] != "1w" {
		t.Fatalf("period ratio: %+v", r)
	}
	if r := byName["invmon_slo:error_budget:ratio"]; r.Expr != "vector(0.01)" {
		t.Fatalf("budget: %q", r.Expr)
	}
	if len(alerts) != len(slo.DefaultAlerts) {
		t.Fatalf("%d alerts, want %d", len(alerts), len(slo.DefaultAlerts))
	}
	page := alerts[0]
	want := "invmon_slo:sli_error:ratio_rate1h{rule=\"with_slo\"} > (14.4 * 0.01)\nand\ninvmon_slo:sli_error:ratio_rate5m{rule=\"with_slo\"} > (14.4 * 0.01)"
	if page.Alert != slo.AlertName || page.Expr != want {
		t.Fatalf("page alert expr:\n%s\nwant:\n%s", page.Expr, want)
	}
	if page.Labels["severity"] != "page" || page.Labels["team"] != "payments" || page.Labels["rule"] != "with_slo" ||
		page.Annotations["runbook_url"] != "https://runbooks.example.com/x" {
		t.Fatalf("page alert labels %v annotations %v", page.Labels, page.Annotations)
	}
	// 14.4 × 1h of a 7-day budget is 8.57 % of it per hour.
	if !strings.Contains(page.Annotations["description"], "8.57 % of the 1w budget goes every 1h") {
		t.Fatalf("description: %s", page.Annotations["description"])
	}
}

func TestParseAlerts(t *testing.T) {
	got, err := slo.ParseAlerts("page:14.4:1h:5m, ticket:1:3d:6h")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != slo.DefaultAlerts[0] || got[1] != slo.DefaultAlerts[3] {
		t.Fatalf("parsed %v", got)
	}
	for _, bad := range []string{"page:14.4:1h", "page:x:1h:5m", "page:2:5m:1h", "page:0:1h:5m", ":2:1h:5m", "page:2:1h:0s"} {
		if _, err := slo.ParseAlerts(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestGenerateRefusesWindowsTooShortForRate(t *testing.T) {
	if _, _, err := slo.Generate(load(t, twoRules), slo.Options{WindowScale: 1.0 / 600}); err == nil ||
		!strings.Contains(err.Error(), "two samples") {
		t.Fatalf("5m scaled to 0.5s: err %v", err)
	}
}

func TestPrometheusRuleWrapsTheGroups(t *testing.T) {
	f, _, err := slo.Generate(load(t, twoRules), slo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := slo.MarshalPrometheusRule(f, slo.Metadata{Name: "invmon-slo", Namespace: "monitoring", Labels: map[string]string{"release": "prometheus"}}, "header")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"# header\n", "apiVersion: monitoring.coreos.com/v1\n", "kind: PrometheusRule\n", "  namespace: monitoring\n",
		"    release: prometheus\n", "spec:\n  groups:\n    - name: invmon-slo-with_slo\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in:\n%s", want, s)
		}
	}
	if _, err := slo.MarshalPrometheusRule(f, slo.Metadata{}, ""); err == nil {
		t.Error("a PrometheusRule without a name was accepted")
	}
}
