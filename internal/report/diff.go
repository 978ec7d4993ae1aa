package report

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/invmon/invmon/internal/quantity"
)

// Diff compares two reports, typically of the same window before and after
// a repair. Findings are matched by rule, entity key and triggering event id:
// violation ids also hash the rule's version, and a repair that comes with a
// rule fix must still match its findings.
type Diff struct {
	Before DiffSide `json:"before"`
	After  DiffSide `json:"after"`
	// Fixed were open before and are resolved after, or no longer found.
	Fixed []DiffItem `json:"fixed"`
	// StillOpen are open in both.
	StillOpen []DiffItem `json:"still_open"`
	// New are open after and were not open before (not found, or resolved
	// then and broken again).
	New []DiffItem `json:"new"`
	// Rules compares the verdict of each rule.
	Rules []RuleChange `json:"rules"`
	// Warnings say why the comparison may mislead: different windows,
	// changed rule versions, partitions the later run did not cover.
	Warnings []string `json:"warnings,omitempty"`
	// units is each rule's impact unit, the later report's first.
	units map[string]quantity.Unit
}

// DiffSide identifies one of the two reports.
type DiffSide struct {
	RunID   string    `json:"run_id"`
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Verdict string    `json:"verdict"`
	Open    int       `json:"open"`
}

// DiffItem is one finding's change.
type DiffItem struct {
	Rule           string    `json:"rule"`
	Key            string    `json:"key"`
	TriggerEventID string    `json:"trigger_event_id"`
	EventTime      time.Time `json:"event_time"`
	Customer       string    `json:"customer,omitempty"`
	Impact         float64   `json:"impact"`
	// Before and After are the states in each report; "absent" when the
	// report has no such finding.
	Before string `json:"before"`
	After  string `json:"after"`
}

// RuleChange is one rule's verdict in both reports.
type RuleChange struct {
	Rule           string `json:"rule"`
	Before         string `json:"before"`
	After          string `json:"after"`
	VersionChanged bool   `json:"version_changed,omitempty"`
}

// Absent marks a finding that one report does not have.
const Absent = "absent"

// Compare computes what changed from a to b.
func Compare(a, b *Report) *Diff {
	d := &Diff{Before: side(a), After: side(b), Fixed: []DiffItem{}, StillOpen: []DiffItem{}, New: []DiffItem{},
		units: map[string]quantity.Unit{}}
	for _, r := range append(slices.Clone(a.Rules), b.Rules...) {
		d.units[r.Name] = r.Unit()
	}
	key := func(f Finding) string { return f.Rule + "\x00" + f.Key + "\x00" + f.TriggerEventID }
	before := map[string]Finding{}
	for _, f := range a.Findings {
		before[key(f)] = f
	}
	after := map[string]Finding{}
	for _, f := range b.Findings {
		after[key(f)] = f
	}
	item := func(f Finding, was, is string) DiffItem {
		return DiffItem{Rule: f.Rule, Key: f.Key, TriggerEventID: f.TriggerEventID, EventTime: f.EventTime,
			Customer: f.Customer, Impact: f.Impact, Before: was, After: is}
	}
	for k, f := range before {
		if f.State != "open" {
			continue
		}
		g, ok := after[k]
		switch {
		case !ok:
			d.Fixed = append(d.Fixed, item(f, f.State, Absent))
		case g.State == "open":
			d.StillOpen = append(d.StillOpen, item(g, f.State, g.State))
		default:
			d.Fixed = append(d.Fixed, item(g, f.State, g.State))
		}
	}
	for k, g := range after {
		if g.State != "open" {
			continue
		}
		f, ok := before[k]
		switch {
		case !ok:
			d.New = append(d.New, item(g, Absent, g.State))
		case f.State != "open":
			d.New = append(d.New, item(g, f.State, g.State))
		}
	}
	for _, list := range [][]DiffItem{d.Fixed, d.StillOpen, d.New} {
		sortItems(list)
	}
	names := map[string]bool{}
	for _, r := range a.Rules {
		names[r.Name] = true
	}
	for _, r := range b.Rules {
		names[r.Name] = true
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		rc := RuleChange{Rule: n, Before: Absent, After: Absent}
		ra, rb := a.RuleNamed(n), b.RuleNamed(n)
		if ra != nil {
			rc.Before = ra.Verdict
		}
		if rb != nil {
			rc.After = rb.Verdict
		}
		if ra != nil && rb != nil && ra.Version != rb.Version {
			rc.VersionChanged = true
			d.Warnings = append(d.Warnings, fmt.Sprintf("rule %s changed between the runs (version %s, then %s)", n, ra.Version, rb.Version))
		}
		d.Rules = append(d.Rules, rc)
	}
	if !a.Window.From.Equal(b.Window.From) || !a.Window.To.Equal(b.Window.To) {
		d.Warnings = append(d.Warnings, fmt.Sprintf("the windows differ: %s to %s, then %s to %s",
			ts(a.Window.From), ts(a.Window.To), ts(b.Window.From), ts(b.Window.To)))
	}
	for _, c := range b.Coverage {
		if !c.Covered {
			d.Warnings = append(d.Warnings, fmt.Sprintf("the later run did not cover %s[%d] (%s): a finding absent there may just be unread", c.Topic, c.Partition, c.Problem))
		}
	}
	return d
}

func side(r *Report) DiffSide {
	s := DiffSide{RunID: r.Run.ID, From: r.Window.From, To: r.Window.To, Verdict: r.Verdict}
	for _, f := range r.Findings {
		if f.State == "open" {
			s.Open++
		}
	}
	return s
}

// sortItems puts diff items in the order of the reports' findings.
func sortItems(list []DiffItem) {
	slices.SortFunc(list, func(a, b DiffItem) int {
		return findingOrder(a.EventTime, b.EventTime, a.Rule, b.Rule, a.Key, b.Key, a.TriggerEventID, b.TriggerEventID)
	})
}

// Text writes the diff for a terminal: a summary line, the verdicts, and
// every fixed, still open and new finding.
func (d *Diff) Text(w io.Writer) error {
	p := &mdWriter{w: w}
	p.f("before %s (%s, %d open)  after %s (%s, %d open)\n", d.Before.RunID, d.Before.Verdict, d.Before.Open,
		d.After.RunID, d.After.Verdict, d.After.Open)
	p.f("fixed %d, still open %d, new %d\n", len(d.Fixed), len(d.StillOpen), len(d.New))
	for _, wn := range d.Warnings {
		p.f("warning: %s\n", wn)
	}
	p.f("\nverdicts:\n")
	for _, r := range d.Rules {
		mark := ""
		if r.VersionChanged {
			mark = " (rule changed)"
		}
		p.f("  %-45s %s -> %s%s\n", r.Rule, r.Before, r.After, mark)
	}
	for _, sec := range []struct {
		name  string
		items []DiffItem
	}{{"fixed", d.Fixed}, {"still open", d.StillOpen}, {"new", d.New}} {
		if len(sec.items) == 0 {
			continue
		}
		p.f("\n%s:\n", sec.name)
		for _, it := range sec.items {
			p.f("  %s  %-42s %-24s %s -> %s  impact %s  customer %s  event %s\n", ts(it.EventTime), it.Rule, it.Key,
				it.Before, it.After, impact(d.units[it.Rule], it.Impact), orDash(it.Customer), it.TriggerEventID)
		}
	}
	return p.err
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
