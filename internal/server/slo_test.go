package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/console"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/server"
	"github.com/invmon/invmon/internal/slo"
)

const ledgerRule = `
streams:
  ledger: {topic: ledger, id: event.entry_id, key: event.payment_id, time: timestamp(event.occurred_at)}
rules:
  - name: no_duplicate_ledger_effect
    kind: unique
    on: {stream: ledger, key: event.idempotency_key}
    window: 1h
    objective: 0.999
    slo_window: 28d
  - name: no_slo
    kind: unique
    on: {stream: ledger}
    window: 1h
`

// TestRulesAPIShowsBudgetFromPrometheus serves counters that fail one check
// in 2000 (half the 0.1 % budget) to a real Prometheus evaluating the
// generated rules (windows scaled 1/60), and reads the rule's remaining budget
// (half) and burn rate (0.5) back through GET /api/v1/rules.
func TestRulesAPIShowsBudgetFromPrometheus(t *testing.T) {
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(ruleFile, []byte(ledgerRule), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadFiles(ruleFile)
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := slo.Generate(set, slo.Options{WindowScale: 1.0 / 60, EvaluationInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b, err := slo.Marshal(f, "test")
	if err != nil {
		t.Fatal(err)
	}
	sloFile := filepath.Join(dir, "slo.rules.yml")
	if err := os.WriteFile(sloFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	exporter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := time.Since(began).Seconds()
		fmt.Fprintf(w, "invmon_checks_total{rule=\"no_duplicate_ledger_effect\"} %g\ninvmon_violations_total{rule=\"no_duplicate_ledger_effect\"} %g\n", 2000*s, s)
	}))
	defer exporter.Close()
	prom := kafkatest.StartPrometheus(t, kafkatest.PrometheusOptions{
		Targets: []string{strings.TrimPrefix(exporter.URL, "http://")}, RuleFiles: []string{sloFile},
	})

	api := httptest.NewServer(server.New(server.Sources{Sources: console.Sources{
		Rules: func() *rules.RuleSet { return set },
		SLO: func(ctx context.Context) map[string]slo.Status {
			return slo.Statuses(ctx, set, prom.URL(), nil)
		},
	}}))
	defer api.Close()
	type ruleJSON struct {
		Name string      `json:"name"`
		SLO  *slo.Status `json:"slo"`
	}
	get := func() map[string]ruleJSON {
		resp, err := http.Get(api.URL + "/api/v1/rules")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Rules []ruleJSON }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		out := map[string]ruleJSON{}
		for _, r := range body.Rules {
			out[r.Name] = r
		}
		return out
	}
	deadline := time.Now().Add(60 * time.Second)
	var st *slo.Status
	for time.Now().Before(deadline) {
		got := get()
		if got["no_slo"].SLO != nil {
			t.Fatalf("a rule without objective has an SLO: %+v", got["no_slo"].SLO)
		}
		st = got["no_duplicate_ledger_effect"].SLO
		if st == nil {
			t.Fatal("no slo for a rule with an objective")
		}
		// Wait until the 5m (scaled: 5s) window holds a steady rate.
		if st.BurnRate != nil && st.BudgetRemaining != nil && time.Since(began) > 10*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if st.Source != "prometheus" || st.BurnRate == nil || st.BudgetRemaining == nil {
		t.Fatalf("no figures from Prometheus within a minute: %+v", st)
	}
	if st.Objective != 0.999 || st.Window != "4w" || math.Abs(st.ErrorBudget-0.001) > 1e-12 {
		t.Errorf("objective %v window %q budget %v", st.Objective, st.Window, st.ErrorBudget)
	}
	t.Logf("from Prometheus after %s: burn rate %.4f, budget remaining %.4f", time.Since(began).Round(time.Second), *st.BurnRate, *st.BudgetRemaining)
	if math.Abs(*st.BurnRate-0.5) > 0.02 || math.Abs(*st.BudgetRemaining-0.5) > 0.02 {
		t.Errorf("burn rate %v, budget remaining %v; want 0.5 and 0.5 (one check in 2000 fails, the budget is one in 1000)", *st.BurnRate, *st.BudgetRemaining)
	}
}

// Without Prometheus the API still shows objectives and budgets, and says
// why the live figures are missing; an unreachable Prometheus says so.
func TestBudgetWithoutPrometheus(t *testing.T) {
	set, err := rules.Parse([]string{"r.yaml"}, map[string][]byte{"r.yaml": []byte(ledgerRule)})
	if err != nil {
		t.Fatal(err)
	}
	st := slo.Statuses(context.Background(), set, "", nil)["no_duplicate_ledger_effect"]
	if st.BudgetRemaining != nil || !strings.Contains(st.Source, "slo.prometheus_url") || st.Objective != 0.999 {
		t.Errorf("without a URL: %+v", st)
	}
	st = slo.Statuses(context.Background(), set, fmt.Sprintf("http://127.0.0.1:%d", kafkatest.FreePort(t)), nil)["no_duplicate_ledger_effect"]
	if st.BudgetRemaining != nil || !strings.HasPrefix(st.Source, "prometheus: ") {
		t.Errorf("unreachable Prometheus: %+v", st)
	}
}
