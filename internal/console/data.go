package console

import (
	"context"
	"math"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/privacy"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/slo"
	"github.com/invmon/invmon/internal/violation"
)

// This file is the console's only access to the monitor's data: the
// violation store, the rules in force and the metrics registry. A change of
// the store's query interface is a change here and nowhere else.

// Sources are what the console reads; each is called per request.
type Sources struct {
	// Store holds the violations (the same the JSON API reads): the
	// monitor's group view, the whole group's violations.
	Store joinstate.ViolationReader
	// Rules returns the rules in force.
	Rules func() *rules.RuleSet
	// Gatherer is the monitor's registry: severities, watermarks, lag.
	Gatherer prometheus.Gatherer
	// Blind returns the streams reported blind now. Default: none.
	Blind func() []string
	// Brokers are the seed brokers, for the kcat command line of a
	// violation's trigger record.
	Brokers []string
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Minimize is applied to the violations the console lists and shows
	// (privacy settings); the overview's sums and the charts are
	// aggregates and stay exact. Default nil: as stored.
	Minimize *privacy.Minimizer
	// SLO returns the error budget of every rule with an objective (as
	// GET /api/v1/rules has it). Default nil: objectives only.
	SLO func(ctx context.Context) map[string]slo.Status
}

// budgets returns the rules' error budgets, or none.
func (s Sources) budgets(ctx context.Context) map[string]slo.Status {
	if s.SLO == nil {
		return nil
	}
	return s.SLO(ctx)
}

// page is one page of a filtered violation list.
type page struct {
	Violations []violation.Violation
	// Next is the cursor of the following page; "" on the last.
	Next string
	// Total counts every match.
	Total int
}

// violationQuery is what a list of violations is filtered by.
type violationQuery struct {
	Rule, Customer string
	State          violation.State // "" for all
	Since, Until   time.Time       // bound detected_at when set
	// After is the cursor of the page to show (a page's Next); "" for the
	// first page.
	After string
	Limit int
}

// violations returns one page of the violations matching q, newest
// detection first, read through the store's secondary indexes, and how
// many match in all (a count over the same index, a page of keys at a
// time: the one part whose cost grows with the matches).
func (s Sources) violations(q violationQuery) (page, error) {
	f := joinstate.Filter{Rule: q.Rule, State: q.State, Customer: q.Customer, Since: q.Since, Until: q.Until, IDMatch: s.Minimize.Matches}
	pg, err := s.Store.ViolationPage(joinstate.Query{Filter: f, Limit: q.Limit, After: q.After})
	if err != nil {
		return page{}, err
	}
	p := page{Violations: s.Minimize.Violations(pg.Violations), Next: pg.Next}
	count := joinstate.Query{Filter: f, Limit: joinstate.MaxPageSize}
	for {
		c, err := s.Store.ViolationPage(count)
		if err != nil {
			return page{}, err
		}
		p.Total += len(c.Violations)
		if c.Next == "" {
			return p, nil
		}
		count.After = c.Next
	}
}

// allOf returns every violation of a rule (for its chart).
func (s Sources) allOf(rule string) ([]violation.Violation, error) {
	return joinstate.AllViolations(s.Store, joinstate.Filter{Rule: rule})
}

// open returns every open violation, for the overview's sums.
func (s Sources) open() ([]violation.Violation, error) {
	return joinstate.AllViolations(s.Store, joinstate.Filter{State: violation.Open})
}

// violation returns the violation with the id, or false.
func (s Sources) violation(id string) (violation.Violation, bool, error) {
	v, err := s.Store.Violation(id)
	if err != nil || v == nil {
		return violation.Violation{}, false, err
	}
	return s.Minimize.Violation(*v), true, nil
}

// gauges is what the console reads from the metrics registry.
type gauges struct {
	// severity is each rule's firing alert severity ("" when none).
	severity map[string]string
	// watermark is each rule's lowest watermark over the partitions it
	// evaluates here.
	watermark map[string]time.Time
	// lag is the consumer lag per topic, summed over its partitions.
	lag map[string]float64
	// inputSkew is how far each stream lags behind another input, when
	// beyond its max_lag.
	inputSkew map[string]float64
}

func (s Sources) gauges() (gauges, error) {
	g := gauges{severity: map[string]string{}, watermark: map[string]time.Time{}, lag: map[string]float64{}, inputSkew: map[string]float64{}}
	if s.Gatherer == nil {
		return g, nil
	}
	mfs, err := s.Gatherer.Gather()
	if err != nil {
		return g, err
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue()
			switch mf.GetName() {
			case "invmon_alerts_firing":
				if v > 0 {
					rule, sev := label(m, "rule"), label(m, "severity")
					g.severity[rule] = worse(g.severity[rule], sev)
				}
			case "invmon_watermark_seconds":
				if v <= 0 || math.IsInf(v, 0) {
					continue
				}
				sec, frac := math.Modf(v)
				t := time.Unix(int64(sec), int64(frac*1e9))
				rule := label(m, "rule")
				if w, ok := g.watermark[rule]; !ok || t.Before(w) {
					g.watermark[rule] = t
				}
			case "invmon_consumer_lag_records":
				g.lag[label(m, "topic")] += v
			case "invmon_input_skew_seconds":
				g.inputSkew[label(m, "stream")] = v
			}
		}
	}
	return g, nil
}

// worse orders severities so a rule firing as page and as ticket (a moment
// between tiers) shows page. Unknown tiers sort after "ticket".
func worse(a, b string) string {
	rank := func(s string) int {
		switch strings.ToLower(s) {
		case "":
			return 0
		case "page", "critical":
			return 3
		case "ticket", "warning":
			return 1
		}
		return 2
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
