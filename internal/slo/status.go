package slo

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/invmon/invmon/internal/rules"
)

// Status is a rule's error budget as people read it: in GET /api/v1/rules and
// the console.
type Status struct {
	Objective float64 `json:"objective"`
	// Window is the rule's slo_window, such as "4w".
	Window string `json:"window"`
	// ErrorBudget is 1 − Objective: the share of checks that may fail.
	ErrorBudget float64 `json:"error_budget"`
	// BudgetRemaining is the share of the window's budget left (1 untouched,
	// 0 spent, below 0 overspent) and BurnRate the current burn rate (error
	// ratio over the shortest alert window divided by the budget), both read
	// from Prometheus's recording rules, which see every member of the group
	// over the whole window, restarts included. Nil when unknown.
	BudgetRemaining *float64 `json:"budget_remaining,omitempty"`
	BurnRate        *float64 `json:"burn_rate,omitempty"`
	// Source says where the figures come from ("prometheus"), or why they are
	// missing.
	Source string `json:"source"`
}

// Statuses returns the error budget of every rule with an objective. With a
// Prometheus URL the remaining budget and burn rate are read from the series
// `monitor slo rules` records; a query that fails leaves them nil and says
// why in Source, for every rule.
func Statuses(ctx context.Context, set *rules.RuleSet, prometheusURL string, client *http.Client) map[string]Status {
	out := map[string]Status{}
	for _, r := range set.Rules {
		if r.Objective <= 0 {
			continue
		}
		out[r.Name] = Status{Objective: r.Objective, Window: model.Duration(r.SLOWindow).String(), ErrorBudget: 1 - r.Objective,
			Source: "unknown: set slo.prometheus_url to read the remaining budget and burn rate from Prometheus"}
	}
	if prometheusURL == "" || len(out) == 0 {
		return out
	}
	remaining, burn, err := queryBudget(ctx, prometheusURL, client)
	for name, st := range out {
		switch {
		case err != nil:
			st.Source = "prometheus: " + err.Error()
		default:
			st.Source = "prometheus"
			if v, ok := remaining[name]; ok {
				st.BudgetRemaining = &v
			}
			if v, ok := burn[name]; ok {
				st.BurnRate = &v
			}
		}
		out[name] = st
	}
	return out
}

func queryBudget(ctx context.Context, url string, client *http.Client) (remaining, burn map[string]float64, err error) {
	cfg := api.Config{Address: url}
	if client != nil {
		cfg.Client = client
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q := promv1.NewAPI(c)
	get := func(series string) (map[string]float64, error) {
		v, _, _, err := q.Query(ctx, series, time.Now())
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", series, err)
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return nil, fmt.Errorf("query %s: a %s, not a vector", series, v.Type())
		}
		m := map[string]float64{}
		for _, s := range vec {
			// NaN (no check in the window) is no figure at all.
			if f := float64(s.Value); f == f {
				m[string(s.Metric["rule"])] = f
			}
		}
		return m, nil
	}
	if remaining, err = get(BudgetRemaining); err != nil {
		return nil, nil, err
	}
	if burn, err = get(CurrentBurnRate); err != nil {
		return nil, nil, err
	}
	return remaining, burn, nil
}
