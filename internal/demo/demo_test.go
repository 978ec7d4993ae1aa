package demo

import (
	"context"
	"strings"
	"testing"

	"github.com/invmon/invmon/internal/quantity"
)

// TestDemoMatchesGroundTruth runs the whole demo (kfake, simulator, monitor)
// and requires it to find exactly what the scenario injected.
func TestDemoMatchesGroundTruth(t *testing.T) {
	for _, scenario := range []string{"friday-rollback", "clean"} {
		t.Run(scenario, func(t *testing.T) {
			res, err := Run(context.Background(), Options{Scenario: scenario, Seed: 3, Payments: 3000})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Rules) == 0 {
				t.Fatal("no rules scored")
			}
			resolved := 0
			for rule, s := range res.Rules {
				if s.Missed != 0 || s.FalsePositives != 0 || s.Duplicates != 0 || s.Found != s.Injected {
					t.Errorf("%s: %+v", rule, s)
				}
				if scenario == "friday-rollback" && (s.Injected == 0 || s.ResolvedFound != s.ResolvedExpected) {
					t.Errorf("%s: the incident must inject violations, and late repairs must be found resolved: %+v", rule, s)
				}
				resolved += s.ResolvedExpected
				if scenario == "clean" && s.Injected != 0 {
					t.Errorf("%s: clean traffic injected %d", rule, s.Injected)
				}
			}
			// The SLI counters the monitor exports equal the simulator's
			// counts, read from /metrics as Prometheus reads them.
			if len(res.Checks) != 5 {
				t.Errorf("checks for %d rules, want 5", len(res.Checks))
			}
			for rule, c := range res.Checks {
				if c.Counted != c.Expected || c.Violations != c.ViolationsTruth || c.Expected == 0 {
					t.Errorf("%s: SLI counters %+v differ from the simulator's", rule, c)
				}
			}
			if scenario == "friday-rollback" && (len(res.Rules) != 5 || resolved == 0) {
				t.Errorf("want all five example rules scored and some late repairs; got %d rules, %d resolved", len(res.Rules), resolved)
			}
			// What `monitor demo` prints as each rule's open impact: the
			// unit's precision, grouped, the unit named ("60,736.68 USD").
			for rule, o := range res.Open {
				if bad := quantity.ExcessDecimals(o.Text, 2); len(bad) > 0 {
					t.Errorf("%s: open impact %q has float noise %v", rule, o.Text, bad)
				}
				if o.Impact != nil && o.Unit != "" && !strings.HasSuffix(o.Text, " "+o.Unit) {
					t.Errorf("%s: open impact %q does not name its unit %s", rule, o.Text, o.Unit)
				}
			}
		})
	}
}
