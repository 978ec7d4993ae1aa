package alert

import (
	"bytes"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"text/template"

	"github.com/prometheus/common/model"

	"github.com/invmon/invmon/internal/privacy"
	"github.com/invmon/invmon/internal/quantity"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/violation"
)

// TopN is how many entities an alert's annotations and Aggregate.Top list.
const TopN = 5

// Aggregate summarizes one rule's open violations. It is what Severity
// decides on and what annotation templates are expanded over.
type Aggregate struct {
	// Rule is the rule's name.
	Rule string
	// Count is the number of open violations.
	Count int
	// Customers is the number of distinct non-empty Violation.Customer values.
	Customers int
	// Total is the sum of Violation.Impact, rounded to the unit's precision
	// (a sum of cents is a whole number of cents, not 60736.679999999986).
	// For a rule without impact.value it equals Count.
	Total float64
	// TotalText is Total as a person reads it: "60,736.68 USD", or
	// "201 violations" for a rule without impact.value.
	TotalText string
	// ImpactUnit is the rule's impact.unit (for example "USD"), for display.
	ImpactUnit string
	// Unit is the rule's impact unit with its precision.
	Unit quantity.Unit
	// Top holds at most TopN open violations, highest impact first (ties by
	// key, then id, so annotations do not flap between equal entities).
	// In annotations their keys and customers are as the privacy settings
	// show them.
	Top []violation.Violation
	// TotalBand is set when annotations show impact as bands
	// (privacy.impact_bands); Total is then the band's lower bound.
	TotalBand string
}

// minimized returns agg as annotations may show it: the top entities'
// identifiers minimised and amounts banded. Counts stay exact, and so does
// the severity, which is decided on agg itself.
func minimized(agg Aggregate, m *privacy.Minimizer) Aggregate {
	if !m.Active() {
		return agg
	}
	agg.Top = m.Violations(agg.Top)
	if label, lower := m.Band(agg.Total); label != "" && !agg.Unit.Counted {
		agg.Total, agg.TotalBand = lower, label
		agg.TotalText = label
		if agg.Unit.Name != "" {
			agg.TotalText += " " + agg.Unit.Name
		}
	}
	return agg
}

// impactText is one violation's impact in a sentence, its band when banded.
func impactText(u quantity.Unit, v violation.Violation) string {
	if v.ImpactBand == "" {
		return u.Text(v.Impact)
	}
	if u.Name == "" {
		return v.ImpactBand
	}
	return v.ImpactBand + " " + u.Name
}

// readAggregate summarizes a rule's open violations as src reads them, one
// at a time: what it keeps is the Aggregate and the set of distinct
// customers, never the violations.
func readAggregate(src OpenViolations, rule string, unit quantity.Unit) (Aggregate, error) {
	a := newAggregator(rule, unit)
	err := src.EachOpen(rule, func(v *violation.Violation) error {
		a.add(v)
		return nil
	})
	if err != nil {
		return Aggregate{}, fmt.Errorf("read open violations of rule %q: %w", rule, err)
	}
	return a.result(), nil
}

// aggregator builds an Aggregate from violations added one by one: the top
// entities are kept by insertion into a TopN-long slice, not by sorting
// every open violation.
type aggregator struct {
	agg       Aggregate
	unit      quantity.Unit
	customers map[string]struct{}
}

func newAggregator(rule string, unit quantity.Unit) *aggregator {
	return &aggregator{agg: Aggregate{Rule: rule, ImpactUnit: unit.Name, Unit: unit}, unit: unit, customers: make(map[string]struct{})}
}

func (a *aggregator) add(v *violation.Violation) {
	agg := &a.agg
	agg.Count++
	agg.Total += v.Impact
	if v.Customer != "" {
		a.customers[v.Customer] = struct{}{}
	}
	i := len(agg.Top)
	for i > 0 && ranksBefore(*v, agg.Top[i-1]) {
		i--
	}
	if i >= TopN {
		return
	}
	agg.Top = append(agg.Top, violation.Violation{})
	copy(agg.Top[i+1:], agg.Top[i:])
	agg.Top[i] = *v
	if len(agg.Top) > TopN {
		agg.Top = agg.Top[:TopN]
	}
}

func (a *aggregator) result() Aggregate {
	agg := a.agg
	agg.Customers = len(a.customers)
	agg.Total = a.unit.Round(agg.Total)
	agg.TotalText = a.unit.Text(agg.Total)
	return agg
}

func ranksBefore(a, b violation.Violation) bool {
	if a.Impact != b.Impact {
		return a.Impact > b.Impact
	}
	if a.Key != b.Key {
		return a.Key < b.Key
	}
	return a.ID < b.ID
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return quantity.Int(n) + " " + many
}

// countsSentence is the heart of the summary: "3 open violations,
// 2 customers, total impact 150.00 USD". A rule without impact.value has
// no impact to state beyond its count.
func countsSentence(agg Aggregate) string {
	s := plural(agg.Count, "open violation", "open violations") + ", " + plural(agg.Customers, "customer", "customers")
	if agg.Unit.Counted {
		return s
	}
	return s + ", total impact " + agg.TotalText
}

// defaultAnnotations are what a responder needs first: how many, how many
// customers, how much, and which entities to look at.
func defaultAnnotations(agg Aggregate, runbookURL string) map[string]string {
	ann := map[string]string{
		"summary":         agg.Rule + ": " + countsSentence(agg),
		"open_violations": strconv.Itoa(agg.Count),
		"customers":       strconv.Itoa(agg.Customers),
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Rule %s has %s affecting %s", agg.Rule,
		plural(agg.Count, "open violation", "open violations"), plural(agg.Customers, "customer", "customers"))
	if agg.Unit.Counted {
		b.WriteString(".")
	} else {
		ann["total_impact"] = agg.Unit.Plain(agg.Total)
		if agg.TotalBand != "" {
			ann["total_impact"] = agg.TotalBand
		}
		fmt.Fprintf(&b, " with a total impact of %s.", agg.TotalText)
	}
	if len(agg.Top) > 0 {
		if agg.Unit.Counted {
			fmt.Fprintf(&b, "\nFirst %d by key:", len(agg.Top))
		} else {
			fmt.Fprintf(&b, "\nTop %d by impact:", len(agg.Top))
		}
		for _, v := range agg.Top {
			fmt.Fprintf(&b, "\n- key=%s customer=%s", v.Key, orDash(v.Customer))
			if !agg.Unit.Counted {
				fmt.Fprintf(&b, " impact=%s", impactText(agg.Unit, v))
			}
		}
	}
	ann["description"] = b.String()
	if runbookURL != "" {
		ann["runbook_url"] = runbookURL
	}
	return ann
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// reservedLabels are set by the manager and may not be overridden by a
// rule's static labels: they are the alert's identity.
var reservedLabels = map[string]bool{"alertname": true, "severity": true}

func checkLabels(labels map[string]string, reserved map[string]bool) error {
	for k := range labels {
		// Alertmanager's (legacy) label name syntax: it rejects a whole
		// batch's alerts with 400 for one bad name, so names are checked
		// up front.
		if !model.LegacyValidation.IsValidLabelName(k) {
			return fmt.Errorf("label name %q is not valid (want [a-zA-Z_][a-zA-Z0-9_]*)", k)
		}
		if reserved[k] {
			return fmt.Errorf("label %q is set by the alert manager and cannot be overridden", k)
		}
	}
	return nil
}

// compiledRule is a RuleSpec checked and with its annotation templates parsed.
type compiledRule struct {
	spec   RuleSpec
	labels map[string]string
	// annotations maps each of the rule's own annotations to its template;
	// nil for values without template actions, which are used verbatim.
	annotations map[string]*template.Template
}

func compileRule(spec RuleSpec) (*compiledRule, error) {
	if spec.Name == "" {
		return nil, fmt.Errorf("rule with empty name")
	}
	if err := checkLabels(spec.Labels, reservedLabels); err != nil {
		return nil, fmt.Errorf("rule %q: %w", spec.Name, err)
	}
	cr := &compiledRule{
		spec:        spec,
		labels:      maps.Clone(spec.Labels),
		annotations: make(map[string]*template.Template, len(spec.Annotations)),
	}
	for k, text := range spec.Annotations {
		if !strings.Contains(text, "{{") {
			cr.annotations[k] = nil
			continue
		}
		t, err := template.New(spec.Name + "/" + k).Option("missingkey=error").Parse(text)
		if err != nil {
			return nil, fmt.Errorf("rule %q: annotation %q: %w", spec.Name, k, err)
		}
		cr.annotations[k] = t
	}
	return cr, nil
}

// expandAnnotations returns the defaults overlaid with the rule's own
// annotations, expanded over agg. A template that fails at run time keeps its
// raw text: a slightly wrong annotation is better than no page.
func (cr *compiledRule) expandAnnotations(agg Aggregate) (map[string]string, []error) {
	ann := defaultAnnotations(agg, cr.spec.RunbookURL)
	var errs []error
	for k, t := range cr.annotations {
		raw := cr.spec.Annotations[k]
		if t == nil {
			switch k {
			case "summary":
				ann[k] = raw + ": " + countsSentence(agg)
			case "description":
				ann[k] = raw + "\n\n" + ann[k]
			default:
				ann[k] = raw
			}
			continue
		}
		b := cappedBuffer{max: rules.MaxAnnotationOutput}
		if err := t.Execute(&b, agg); err != nil {
			errs = append(errs, fmt.Errorf("annotation %q: %w", k, err))
			ann[k] = raw
			continue
		}
		ann[k] = b.String()
	}
	return ann, errs
}

// cappedBuffer fails a write past max bytes, which stops the template: an
// annotation's expansion is bounded whatever the template does.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, fmt.Errorf("annotation longer than %d bytes", b.max)
	}
	return b.Buffer.Write(p)
}
