// Package slo turns the objectives of rules into Prometheus recording rules
// and multiwindow, multi-burn-rate alerts, the way Sloth and Pyrra do for
// availability SLOs (Google SRE workbook, "Alerting on SLOs").
//
// A rule's SLI is its error ratio: invmon_violations_total over
// invmon_checks_total. Its error budget is 1 − objective over slo_window. A
// burn rate is the error ratio divided by the budget: burning at 1 spends the
// budget in exactly slo_window; at 14.4, a 30-day budget loses 2 % per hour.
// An alert fires when the burn rate exceeds its factor over a long window
// (the budget really is being spent) and over a short one (it still is), so
// it pages fast on a real incident and stops soon after it ends.
package slo

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/invmon/invmon/internal/rules"
)

// Metric names the generated rules read and write.
const (
	ChecksMetric     = "invmon_checks_total"
	ViolationsMetric = "invmon_violations_total"
	// RecordPrefix starts every recorded series; the level:metric:operation
	// shape follows the Prometheus recording-rule naming convention.
	RecordPrefix = "invmon_slo:"
	// AlertName is the alertname of every burn-rate alert; the rule,
	// severity and windows are labels, so one route matches them all.
	AlertName = "InvariantErrorBudgetBurn"
)

// Recorded series, per rule (label rule).
const (
	// ErrorRatioRecord + window name ("5m") is the error ratio over it.
	ErrorRatioRecord = RecordPrefix + "sli_error:ratio_rate"
	// PeriodErrorRatio is the error ratio over the rule's slo_window.
	PeriodErrorRatio = RecordPrefix + "sli_error:ratio_period"
	// ObjectiveRecord and BudgetRecord are the objective and 1 − objective.
	ObjectiveRecord = RecordPrefix + "objective:ratio"
	BudgetRecord    = RecordPrefix + "error_budget:ratio"
	// BudgetRemaining is the share of the period's budget left: 1 when no
	// check failed, 0 when exactly the budget is spent, negative beyond.
	BudgetRemaining = RecordPrefix + "error_budget_remaining:ratio"
	// CurrentBurnRate is the error ratio over the shortest window divided by
	// the budget.
	CurrentBurnRate = RecordPrefix + "current_burn_rate:ratio"
)

// BurnAlert is one multiwindow burn-rate alert: it fires when the error ratio
// exceeds Factor × budget over both Long and Short.
type BurnAlert struct {
	Severity string
	Factor   float64
	Long     time.Duration
	Short    time.Duration
}

func (a BurnAlert) String() string {
	return fmt.Sprintf("%s:%s:%s:%s", a.Severity, strconv.FormatFloat(a.Factor, 'f', -1, 64),
		model.Duration(a.Long), model.Duration(a.Short))
}

// DefaultAlerts are the SRE workbook's four alerts for a 30-day budget: 2 %
// of it spent in an hour or 5 % in six hours page; 10 % in a day or in three
// days opens a ticket.
var DefaultAlerts = []BurnAlert{
	{Severity: "page", Factor: 14.4, Long: time.Hour, Short: 5 * time.Minute},
	{Severity: "page", Factor: 6, Long: 6 * time.Hour, Short: 30 * time.Minute},
	{Severity: "ticket", Factor: 3, Long: 24 * time.Hour, Short: 2 * time.Hour},
	{Severity: "ticket", Factor: 1, Long: 72 * time.Hour, Short: 6 * time.Hour},
}

// ParseAlerts reads a comma-separated list of SEVERITY:FACTOR:LONG:SHORT,
// such as "page:14.4:1h:5m,ticket:1:3d:6h".
func ParseAlerts(s string) ([]BurnAlert, error) {
	var out []BurnAlert
	for _, part := range strings.Split(s, ",") {
		f := strings.Split(strings.TrimSpace(part), ":")
		if len(f) != 4 {
			return nil, fmt.Errorf("alert %q: want SEVERITY:FACTOR:LONG:SHORT, such as page:14.4:1h:5m", part)
		}
		factor, err := strconv.ParseFloat(f[1], 64)
		if err != nil || factor <= 0 {
			return nil, fmt.Errorf("alert %q: factor %q must be a positive number", part, f[1])
		}
		long, err1 := model.ParseDuration(f[2])
		short, err2 := model.ParseDuration(f[3])
		if err1 != nil || err2 != nil || short >= long || short <= 0 {
			return nil, fmt.Errorf("alert %q: want a long and a shorter, positive short window (such as 1h:5m)", part)
		}
		if f[0] == "" {
			return nil, fmt.Errorf("alert %q: severity is empty", part)
		}
		out = append(out, BurnAlert{Severity: f[0], Factor: factor, Long: time.Duration(long), Short: time.Duration(short)})
	}
	return out, nil
}

// Options shape the generated rules.
type Options struct {
	// Alerts are the burn-rate alerts per rule. Default DefaultAlerts.
	Alerts []BurnAlert
	// WindowScale multiplies every window (the alerts' and slo_window) in the
	// expressions, while series keep their nominal names. 1 (the default) is
	// production; a test that lives seconds, not days, uses 1/60 so that an
	// hour is a minute. Factors are unchanged: they are shares of the budget.
	WindowScale float64
	// EvaluationInterval, when set, is every group's interval; else
	// Prometheus's global evaluation_interval applies.
	EvaluationInterval time.Duration
}

// File is a Prometheus rule file.
type File struct {
	Groups []Group `yaml:"groups"`
}

// Group is a rule group.
type Group struct {
	Name     string          `yaml:"name"`
	Interval *model.Duration `yaml:"interval,omitempty"`
	Rules    []Rule          `yaml:"rules"`
}

// Rule is a recording or an alerting rule.
type Rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// Generate returns the rule file for every rule in set that has an
// objective, in the rule set's order, and the names of those without one.
func Generate(set *rules.RuleSet, o Options) (*File, []string, error) {
	if o.WindowScale == 0 {
		o.WindowScale = 1
	}
	if o.WindowScale < 0 {
		return nil, nil, fmt.Errorf("window scale %v must be positive", o.WindowScale)
	}
	if o.Alerts == nil {
		o.Alerts = DefaultAlerts
	}
	g := generator{o: o}
	for _, a := range o.Alerts {
		for _, w := range []time.Duration{a.Long, a.Short} {
			if !slices.Contains(g.windows, w) {
				g.windows = append(g.windows, w)
			}
		}
	}
	slices.Sort(g.windows)
	for _, w := range g.windows {
		if s := g.scaled(w); s < 2*time.Second {
			return nil, nil, fmt.Errorf("window %s scaled to %s: a rate needs at least two samples, keep windows at 2s or more", model.Duration(w), model.Duration(s))
		}
	}
	f := &File{}
	var without []string
	for _, r := range set.Rules {
		if r.Objective <= 0 {
			without = append(without, r.Name)
			continue
		}
		f.Groups = append(f.Groups, g.group(r))
	}
	return f, without, nil
}

type generator struct {
	o       Options
	windows []time.Duration
}

func (g generator) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * g.o.WindowScale).Round(time.Millisecond)
}

func (g generator) rangeOf(d time.Duration) string { return model.Duration(g.scaled(d)).String() }

// windowName names a window by its nominal length, whatever the scale, so
// that dashboards and the API read the same series in a test and in
// production.
func windowName(d time.Duration) string { return model.Duration(d).String() }

func (g generator) group(r *rules.Rule) Group {
	sel := fmt.Sprintf(`{rule=%q}`, r.Name)
	ratio := func(window string) string {
		return fmt.Sprintf("sum by (rule) (rate(%s%s[%s]))\n/\nsum by (rule) (rate(%s%s[%s]))",
			ViolationsMetric, sel, window, ChecksMetric, sel, window)
	}
	budget := 1 - r.Objective
	budgetLit := strconv.FormatFloat(budget, 'g', 6, 64)
	// Every series carries its rule as a static label too, so that the
	// groups of different rules never record the same series (promtool
	// lints that) even where an expression yields no rule label.
	ruleLabel := map[string]string{"rule": r.Name}
	gr := Group{Name: "invmon-slo-" + r.Name}
	if g.o.EvaluationInterval > 0 {
		iv := model.Duration(g.o.EvaluationInterval)
		gr.Interval = &iv
	}
	for _, w := range g.windows {
		gr.Rules = append(gr.Rules, Rule{Record: ErrorRatioRecord + windowName(w), Expr: ratio(g.rangeOf(w)), Labels: ruleLabel})
	}
	period := fmt.Sprintf("sum by (rule) (increase(%s%s[%s]))\n/\nsum by (rule) (increase(%s%s[%s]))",
		ViolationsMetric, sel, g.rangeOf(r.SLOWindow), ChecksMetric, sel, g.rangeOf(r.SLOWindow))
	gr.Rules = append(gr.Rules,
		Rule{Record: PeriodErrorRatio, Expr: period, Labels: map[string]string{"rule": r.Name, "slo_window": windowName(r.SLOWindow)}},
		Rule{Record: ObjectiveRecord, Expr: fmt.Sprintf("vector(%s)", strconv.FormatFloat(r.Objective, 'g', -1, 64)), Labels: ruleLabel},
		Rule{Record: BudgetRecord, Expr: fmt.Sprintf("vector(%s)", budgetLit), Labels: ruleLabel},
		Rule{Record: BudgetRemaining, Expr: fmt.Sprintf("1 - %s%s / %s", PeriodErrorRatio, sel, budgetLit), Labels: ruleLabel},
		Rule{Record: CurrentBurnRate, Expr: fmt.Sprintf("%s%s%s / %s", ErrorRatioRecord, windowName(g.windows[0]), sel, budgetLit), Labels: ruleLabel},
	)
	for _, a := range g.o.Alerts {
		threshold := fmt.Sprintf("(%s * %s)", strconv.FormatFloat(a.Factor, 'f', -1, 64), budgetLit)
		expr := fmt.Sprintf("%s%s%s > %s\nand\n%s%s%s > %s",
			ErrorRatioRecord, windowName(a.Long), sel, threshold, ErrorRatioRecord, windowName(a.Short), sel, threshold)
		labels := map[string]string{}
		for k, v := range r.Labels {
			labels[k] = v
		}
		labels["rule"] = r.Name
		labels["severity"] = a.Severity
		labels["long_window"] = windowName(a.Long)
		labels["short_window"] = windowName(a.Short)
		// Spent at this rate, the whole budget lasts slo_window / factor.
		share := a.Factor * float64(a.Long) / float64(r.SLOWindow) * 100
		ann := map[string]string{
			"summary": fmt.Sprintf("%s is spending its consistency error budget %s× too fast", r.Name, strconv.FormatFloat(a.Factor, 'f', -1, 64)),
			"description": fmt.Sprintf("More than %s × (1 − %s) of %s's checks violated it over the last %s and the last %s: "+
				"at this rate %.3g %% of the %s budget goes every %s, and all of it in %s.",
				strconv.FormatFloat(a.Factor, 'f', -1, 64), strconv.FormatFloat(r.Objective, 'f', -1, 64), r.Name,
				windowName(a.Long), windowName(a.Short), share, windowName(r.SLOWindow), windowName(a.Long),
				roundDuration(time.Duration(float64(r.SLOWindow)/a.Factor))),
		}
		if u := r.Annotations["runbook_url"]; u != "" {
			ann["runbook_url"] = u
		}
		gr.Rules = append(gr.Rules, Rule{Alert: AlertName, Expr: expr, Labels: labels, Annotations: ann})
	}
	return gr
}

// roundDuration prints d in the largest whole unit that keeps it readable.
func roundDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return model.Duration(d.Round(time.Hour)).String()
	case d >= time.Hour:
		return model.Duration(d.Round(time.Minute)).String()
	default:
		return model.Duration(d.Round(time.Second)).String()
	}
}
