package replay

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/buildinfo"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/quantity"
	"github.com/invmon/invmon/internal/report"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/violation"
)

// build assembles the evidence from the plan, the state and the engines.
func (r *runner) build(ctx context.Context, adm *kadm.Client) (*report.Report, error) {
	plan := r.plan
	final := r.finalClock()
	rep := &report.Report{
		Format:         report.FormatVersion,
		RuleSetVersion: r.rs.Version,
		Run: report.Run{
			ID: plan.RunID, PlannedAt: plan.PlannedAt, FinishedAt: r.o.Now().UTC(), Resumes: plan.Resumes, MonitorVersion: buildinfo.Short(),
			RateLimit: r.o.Rate, RecordsThisRun: r.readThisRun,
		},
		Window: report.Window{
			From: plan.From, To: plan.To, LeadIn: plan.LeadIn, ReadFrom: plan.ReadFrom().UTC(), Until: plan.Until,
			Horizon: plan.Horizon, FinalClock: final,
		},
		Coverage: []report.Coverage{}, Watermarks: []report.Watermark{}, Findings: []report.Finding{},
		Customers: []report.Customer{}, DeadLetters: []report.DeadLetter{},
	}
	if r.readThisRun > 0 && r.readEnd.After(r.readStart) {
		rep.Run.ReadSeconds = r.readEnd.Sub(r.readStart).Seconds()
		rep.Run.RecordsPerSecond = float64(r.readThisRun) / rep.Run.ReadSeconds
	}
	for _, rule := range r.rs.Rules {
		rep.Window.Rules = append(rep.Window.Rules, rule.Name)
	}

	// Coverage, with the lag behind the partitions' ends now.
	topics := map[string]bool{}
	for _, s := range r.tps {
		topics[s.plan.Topic] = true
	}
	ends, err := adm.ListEndOffsets(ctx, sortedSet(topics)...)
	if err != nil && !isShardErr(err) {
		r.log.Warn("list end offsets for the report; lag unknown", zap.Error(err))
	}
	notCovered := map[string][]string{} // topic → problems
	for _, s := range r.tps {
		c := report.Coverage{
			Topic: s.plan.Topic, Partition: s.plan.Partition, Role: s.plan.Role, PlannedStart: s.plan.Start, PlannedEnd: s.plan.End,
			LogStart: s.plan.LogStart, RecordsRead: s.read, Position: s.next, EndOffset: -1, Lag: -1,
		}
		c.Covered = s.failed == "" && s.next >= s.plan.End
		c.Problem = s.failed
		if !c.Covered && c.Problem == "" {
			c.Problem = fmt.Sprintf("read to offset %d of %d", s.next, s.plan.End)
		}
		if o, ok := ends.Lookup(s.plan.Topic, s.plan.Partition); ok && o.Err == nil {
			c.EndOffset = o.Offset
			c.Lag = max(0, o.Offset-max(s.next, 0))
		}
		if !c.Covered {
			notCovered[c.Topic] = append(notCovered[c.Topic], fmt.Sprintf("%s not covered: %s", s.label, c.Problem))
		}
		rep.Coverage = append(rep.Coverage, c)
	}

	// Findings: violations whose trigger is inside the window.
	all, err := r.store.Violations(joinstate.Filter{})
	if err != nil {
		return nil, fmt.Errorf("replay: read violations: %w", err)
	}
	var open []violation.Violation
	for _, v := range all {
		switch {
		case v.EventTime.Before(plan.From):
			rep.OutsideWindow.BeforeWindow++
			continue
		case !v.EventTime.Before(plan.To):
			rep.OutsideWindow.AfterWindow++
			continue
		}
		rep.Findings = append(rep.Findings, finding(v))
		if v.State == violation.Open {
			open = append(open, v)
		}
	}
	report.SortFindings(rep.Findings)
	r.open = open

	checked := map[string]int{}
	for _, p := range r.parts {
		if err := scanEntities(r.store.Snapshot(p.id), checked); err != nil {
			return nil, fmt.Errorf("replay: count entities of partition %d: %w", p.id, err)
		}
		exs, err := scanExamples(r.store.Snapshot(p.id))
		if err != nil {
			return nil, fmt.Errorf("replay: rejected records of partition %d: %w", p.id, err)
		}
		for k, n := range p.book.dead {
			dl := report.DeadLetter{Topic: k.topic, Partition: p.id, Reason: k.reason, Count: n}
			for _, e := range exs {
				if e.topic == k.topic && e.reason == k.reason {
					dl.Examples = append(dl.Examples, report.DeadLetterExample{Offset: e.offset, Error: e.msg})
				}
			}
			rep.DeadLetters = append(rep.DeadLetters, dl)
		}
	}
	sort.Slice(rep.DeadLetters, func(i, j int) bool {
		a, b := rep.DeadLetters[i], rep.DeadLetters[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Reason < b.Reason
	})

	rep.Verdict = report.Pass
	for _, rule := range r.rs.Rules {
		rr := r.ruleResult(rule, rep.Findings, checked[rule.Name], notCovered, rep)
		if rr.Verdict != report.Pass {
			rep.Verdict = report.Fail
		}
		rep.Rules = append(rep.Rules, rr)
	}
	rep.Customers = cohort(rep.Findings, rep)
	rep.Notes = r.notes(final, rep)
	return rep, nil
}

// ruleResult computes one rule's counts and verdict.
func (r *runner) ruleResult(rule *rules.Rule, findings []report.Finding, checked int, notCovered map[string][]string, rep *report.Report) report.Rule {
	rr := report.Rule{
		Name: rule.Name, Kind: rule.Kind, Version: rule.Version, Topics: ruleTopics(rule), EntitiesChecked: checked,
		ImpactUnit: rule.Impact.Unit, ImpactCounted: rule.Impact.Value == nil, Reach: report.Duration(Reach(rule)),
	}
	unit := rr.Unit()
	violating, customers := map[string]bool{}, map[string]bool{}
	for _, f := range findings {
		if f.Rule != rule.Name {
			continue
		}
		violating[f.Key] = true
		rr.TotalImpact += f.Impact
		if f.State == string(violation.Open) {
			rr.Open++
			rr.OpenImpact += f.Impact
			if f.Customer != "" {
				customers[f.Customer] = true
			}
		} else {
			rr.Resolved++
		}
	}
	rr.EntitiesViolating, rr.Customers = len(violating), len(customers)
	if rr.EntitiesChecked > 0 {
		rr.ErrorRatio = float64(rr.EntitiesViolating) / float64(rr.EntitiesChecked)
	}
	if rule.Objective > 0 {
		rr.Objective = rule.Objective
		rr.Budget = report.BudgetWithin
		if rr.ErrorRatio > 1-rule.Objective {
			rr.Budget = report.BudgetExhausted
		}
	}
	rr.OpenImpact, rr.TotalImpact = unit.Round(rr.OpenImpact), unit.Round(rr.TotalImpact)
	switch {
	case rr.Open > 0 && unit.Counted:
		rr.Reasons = append(rr.Reasons, fmt.Sprintf("%s findings still open", quantity.Int(rr.Open)))
	case rr.Open > 0:
		rr.Reasons = append(rr.Reasons, fmt.Sprintf("%s findings still open (impact %s)", quantity.Int(rr.Open), unit.Text(rr.OpenImpact)))
	}
	for _, t := range rr.Topics {
		rr.Reasons = append(rr.Reasons, notCovered[t]...)
	}
	need := r.plan.To.Add(Reach(rule))
	var short []string
	for i, p := range r.parts {
		wm := p.eng.Watermark(rule.Name)
		rep.Watermarks = append(rep.Watermarks, report.Watermark{Rule: rule.Name, Partition: p.id, Watermark: wm})
		if i == 0 || wm.Before(rr.JudgedThrough) {
			rr.JudgedThrough = wm
		}
		if wm.Before(need) {
			msg := fmt.Sprintf("partition %d judged only through %s", p.id, wm.Format(time.RFC3339))
			var blind []string
			for _, s := range rule.Inputs() {
				if lag, ok := p.eng.Blind()[s.Name]; ok {
					blind = append(blind, fmt.Sprintf("%s lags by %s", s.Name, lag))
				}
			}
			if len(blind) > 0 {
				msg += " (" + strings.Join(blind, ", ") + ")"
			}
			short = append(short, msg)
		}
		if rule.Unique == nil {
			rr.Waiting += int(gauge(r.metrics.Pending.WithLabelValues(rule.Name, strconv.Itoa(int(p.id)))))
		}
	}
	if len(short) > 0 {
		rr.Reasons = append(rr.Reasons, fmt.Sprintf("deadlines up to %s not all judged: %s", need.Format(time.RFC3339), strings.Join(short, "; ")))
	}
	rr.Verdict = report.Pass
	if len(rr.Reasons) > 0 {
		rr.Verdict = report.Fail
	}
	return rr
}

// gauge reads a gauge's value.
func gauge(g interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return 0
	}
	return m.GetGauge().GetValue()
}

func finding(v violation.Violation) report.Finding {
	return report.Finding{
		ID: v.ID, Rule: v.Rule, RuleVersion: v.RuleVersion, Key: v.Key, State: string(v.State), Impact: v.Impact,
		Customer: v.Customer, TriggerEventID: v.TriggerEventID, EventTime: v.EventTime.UTC(), Deadline: v.Deadline.UTC(),
		DetectedAt: v.DetectedAt.UTC(), ResolvedAt: utcPtr(v.ResolvedAt), ResolvedByEventTime: utcPtr(v.ResolvedByEventTime),
		Source: report.Source{Topic: v.Source.Topic, Partition: v.Source.Partition, Offset: v.Source.Offset}, Detail: v.Detail,
	}
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// cohort groups the findings by customer, with their impact summed per
// unit; most open findings first (amounts in different units do not
// compare).
func cohort(findings []report.Finding, rep *report.Report) []report.Customer {
	by := map[string]*report.Customer{}
	rulesOf := map[string]map[string]bool{}
	for _, f := range findings {
		if f.Customer == "" {
			continue
		}
		c := by[f.Customer]
		if c == nil {
			c = &report.Customer{Customer: f.Customer}
			by[f.Customer] = c
			rulesOf[f.Customer] = map[string]bool{}
		}
		c.Findings++
		open := f.State == string(violation.Open)
		if open {
			c.Open++
		}
		if u := rep.UnitOf(f.Rule); !u.Counted {
			i := slices.IndexFunc(c.Impacts, func(a report.Amount) bool { return a.Unit == u.Name })
			if i < 0 {
				i = len(c.Impacts)
				c.Impacts = append(c.Impacts, report.Amount{Unit: u.Name})
			}
			c.Impacts[i].Total = u.Round(c.Impacts[i].Total + f.Impact)
			if open {
				c.Impacts[i].Open = u.Round(c.Impacts[i].Open + f.Impact)
			}
		}
		rulesOf[f.Customer][f.Rule] = true
	}
	out := make([]report.Customer, 0, len(by))
	for name, c := range by {
		c.Rules = sortedSet(rulesOf[name])
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Open != b.Open {
			return a.Open > b.Open
		}
		if a.Findings != b.Findings {
			return a.Findings > b.Findings
		}
		return a.Customer < b.Customer
	})
	return out
}

// notes say in words what this replay judged and what it did not.
func (r *runner) notes(final time.Time, rep *report.Report) []string {
	p := r.plan
	lateness, idle := streamTiming(r.rs)
	_, refs := topicRoles(r.rs)
	// The planning time is run-specific (it is in run.planned_at): notes
	// must read the same for two executions of one plan.
	until := "each partition's end offset when the replay was planned, so late events and repairs produced after the window are seen"
	if p.Until != nil {
		until = "the first record with a timestamp at or after " + p.Until.Format(time.RFC3339)
	}
	notes := []string{
		fmt.Sprintf("Findings are violations whose triggering event has an event time in [%s, %s): an absence rule's `when` event, the later of a unique rule's two events, the event of a transition rule's move, the event whose state a state rule found still holding.",
			p.From.Format(time.RFC3339Nano), p.To.Format(time.RFC3339Nano)),
		fmt.Sprintf("Inputs were read from the first record with a timestamp at or after %s (the window's start minus a lead-in of %s), up to %s.",
			p.ReadFrom().Format(time.RFC3339Nano), p.LeadIn, until),
		"The replay's clock is event time: on each partition, the newest event time read; detected_at and resolved_at are on that clock, so a replay judges deadlines as they stood then and reproduces exactly.",
		fmt.Sprintf("Once every input was read, the clock moved to %s: the later of the window's end plus the horizon (%s, the rules' largest deadline) plus the allowed lateness (%s), and the newest event read plus idle_after (%s). Every deadline of a trigger inside the window was judged where its inputs were fully read; expectations with later deadlines are counted as waiting, not judged.",
			final.Format(time.RFC3339Nano), p.Horizon, lateness, idle),
		"A partition that could not be read completely is not covered: it holds its rules' watermarks where its data ends (nothing it could not see is judged) and fails the verdict of every rule reading its topic.",
		fmt.Sprintf("Violations of triggers outside the window are not findings: %d in the lead-in (judged without what preceded them) and %d after the window.",
			rep.OutsideWindow.BeforeWindow, rep.OutsideWindow.AfterWindow),
		"A rule passes when every partition it reads (lookups included) was fully covered, no finding of it is still open, and every deadline up to the window's end plus its reach was judged.",
	}
	if len(refs) > 0 {
		notes = append(notes, fmt.Sprintf("Reference tables (%s) were read from their log start: a compacted table's state at a time is everything written before it.", strings.Join(refs, ", ")))
	}
	for _, rule := range r.rs.Rules {
		if rule.Transition != nil {
			notes = append(notes, fmt.Sprintf("Transition rule %s judges an entity's first event in the read range against `initial`; an entity whose history began before the lead-in may show as starting in another state. --lead-in should cover entity lifetimes.", rule.Name))
		}
		if rule.State != nil && rule.State.Until != nil {
			notes = append(notes, fmt.Sprintf("State rule %s takes its deadlines from the data (`until`); a deadline after %s is not judged by this replay.", rule.Name, final.Add(-lateness).Format(time.RFC3339)))
		}
	}
	if p.Until != nil && p.Until.Before(p.To.Add(time.Duration(p.Horizon))) {
		notes = append(notes, fmt.Sprintf("Warning: --until %s is before the window's end plus the horizon: an expected event after it was not seen, and its trigger counts as a violation.", p.Until.Format(time.RFC3339)))
	}
	return notes
}
