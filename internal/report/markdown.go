package report

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/invmon/invmon/internal/quantity"
)

// Markdown writes the report as Markdown, for a ticket or an incident
// document: the same content as report.html without the chart.
func Markdown(w io.Writer, r *Report) error {
	p := &mdWriter{w: w}
	p.f("# invmon replay %s: %s\n\n", r.Run.ID, strings.ToUpper(r.Verdict))
	p.f("Window **%s** to **%s** (triggers in `[from, to)`), rules version `%s`.\n\n", ts(r.Window.From), ts(r.Window.To), r.RuleSetVersion)
	until := "the partitions' end offsets at " + ts(r.Run.PlannedAt)
	if r.Window.Until != nil {
		until = ts(*r.Window.Until)
	}
	p.f("Inputs read from %s (lead-in %s) up to %s; horizon %s; final event-time clock %s.\n\n",
		ts(r.Window.ReadFrom), r.Window.LeadIn, until, r.Window.Horizon, ts(r.Window.FinalClock))

	p.f("## Verdict per rule\n\n")
	p.f("| rule | kind | version | verdict | objective | checked | violating | open | resolved | open impact | customers | judged through | reasons |\n")
	p.f("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, rule := range r.Rules {
		p.f("| %s | %s | `%s` | **%s** | %s | %d | %d | %d | %d | %s | %d | %s | %s |\n", md(rule.Name), rule.Kind, rule.Version, rule.Verdict,
			budget(rule), rule.EntitiesChecked, rule.EntitiesViolating, rule.Open, rule.Resolved, impact(rule.Unit(), rule.OpenImpact),
			rule.Customers, ts(rule.JudgedThrough), md(strings.Join(rule.Reasons, "; ")))
	}

	p.f("\n## Coverage\n\n")
	p.f("| topic | partition | role | planned | log start | read | position | covered | lag at end | problem |\n")
	p.f("|---|---:|---|---|---:|---:|---:|---|---:|---|\n")
	for _, c := range r.Coverage {
		p.f("| %s | %d | %s | %d–%d | %d | %d | %d | %s | %d | %s |\n", md(c.Topic), c.Partition, c.Role, c.PlannedStart, c.PlannedEnd,
			c.LogStart, c.RecordsRead, c.Position, yesNo(c.Covered), c.Lag, md(c.Problem))
	}

	p.f("\n## Watermarks at the end\n\n| rule | partition | watermark |\n|---|---:|---|\n")
	for _, wm := range r.Watermarks {
		p.f("| %s | %d | %s |\n", md(wm.Rule), wm.Partition, ts(wm.Watermark))
	}

	p.f("\n## Affected customers\n\n")
	if len(r.Customers) == 0 {
		p.f("None.\n")
	} else {
		p.f("| customer | findings | open | open impact | total impact | rules |\n|---|---:|---:|---:|---:|---|\n")
		for _, c := range r.Customers {
			p.f("| %s | %d | %d | %s | %s | %s |\n", md(c.Customer), c.Findings, c.Open, amounts(c.Impacts, true), amounts(c.Impacts, false), md(strings.Join(c.Rules, ", ")))
		}
	}

	p.f("\n## Findings\n\n")
	if len(r.Findings) == 0 {
		p.f("None.\n")
	} else {
		p.f("| event time | rule | key | state | impact | customer | source | deadline | detected | resolved | detail | id |\n")
		p.f("|---|---|---|---|---:|---|---|---|---|---|---|---|\n")
		for _, f := range r.Findings {
			resolved := ""
			if f.ResolvedAt != nil {
				resolved = ts(*f.ResolvedAt)
			}
			p.f("| %s | %s | %s | %s | %s | %s | %s[%d]@%d | %s | %s | %s | %s | `%s` |\n", ts(f.EventTime), md(f.Rule), md(f.Key), f.State,
				impact(r.UnitOf(f.Rule), f.Impact), md(f.Customer), md(f.Source.Topic), f.Source.Partition, f.Source.Offset, ts(f.Deadline), ts(f.DetectedAt),
				resolved, md(f.Detail), f.ID)
		}
	}
	if o := r.OutsideWindow; o.BeforeWindow+o.AfterWindow > 0 {
		p.f("\n%d violations were recorded for triggers before the window and %d after it; they are not findings.\n", o.BeforeWindow, o.AfterWindow)
	}

	if len(r.DeadLetters) > 0 {
		p.f("\n## Records that could not be evaluated\n\n| topic | partition | reason | count | first offsets |\n|---|---:|---|---:|---|\n")
		for _, d := range r.DeadLetters {
			var offs []string
			for _, e := range d.Examples {
				offs = append(offs, strconv.FormatInt(e.Offset, 10))
			}
			p.f("| %s | %d | %s | %d | %s |\n", md(d.Topic), d.Partition, d.Reason, d.Count, strings.Join(offs, ", "))
		}
	}

	p.f("\n## What was judged\n\n")
	for _, n := range r.Notes {
		p.f("- %s\n", n)
	}
	p.f("\n---\nRun %s, planned %s, finished %s, resumed %d times; %d records read in %.1fs (%.0f records/s, limit %s).\n",
		r.Run.ID, ts(r.Run.PlannedAt), ts(r.Run.FinishedAt), r.Run.Resumes, r.Run.RecordsThisRun, r.Run.ReadSeconds, r.Run.RecordsPerSecond, limit(r.Run.RateLimit))
	if r.Run.MonitorVersion != "" {
		p.f("Written by %s.\n", r.Run.MonitorVersion)
	}
	return p.err
}

type mdWriter struct {
	w   io.Writer
	err error
}

func (p *mdWriter) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// md escapes what would break a Markdown table cell.
func md(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "`", "'").Replace(s)
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

// impact is an amount in its unit ("1,234.50 USD"); a rule without
// impact.value has no amount to show, its counts are in their own columns.
func impact(u quantity.Unit, v float64) string {
	if u.Counted {
		return "-"
	}
	return u.Text(v)
}

// amounts lists a customer's open or total impact, one sum per unit.
func amounts(as []Amount, open bool) string {
	var parts []string
	for _, a := range as {
		v := a.Total
		if open {
			v = a.Open
		}
		parts = append(parts, quantity.UnitOf(a.Unit, true).Text(v))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

func limit(rate float64) string {
	if rate <= 0 {
		return "none"
	}
	return strconv.FormatFloat(rate, 'f', -1, 64) + "/s"
}

// budget says how the window's error ratio stands against the rule's
// objective: "0.40 % of 99.9 %: budget exhausted", or "none".
func budget(r Rule) string {
	if r.Objective <= 0 {
		return "none"
	}
	return fmt.Sprintf("%s failing, objective %s: %s", percent(r.ErrorRatio), percent(r.Objective), r.Budget)
}

// percent shows a ratio as a percentage with at most two decimals, like
// every other figure in the report.
func percent(x float64) string {
	return strconv.FormatFloat(math.Round(x*10000)/100, 'f', -1, 64) + " %"
}
