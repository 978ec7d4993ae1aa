package alert

import (
	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/rules"
)

// ConfigFrom turns the alertmanager section of the configuration into the
// manager's targets and HTTP client settings: the one place the monitor and
// replay assemble it. The caller adds what is its own (ExternalURL, Now,
// Minimize).
func ConfigFrom(am config.Alertmanager) Config {
	return Config{
		URLs:           am.Targets(),
		ResendInterval: am.ResendInterval,
		ClientConfig: ClientConfig{
			Timeout:                  am.Timeout,
			HTTP:                     am.HTTP,
			AllowCredentialsOverHTTP: am.AllowCredentialsOverHTTP,
		},
	}
}

// SpecsOf turns compiled rules into what the manager needs.
func SpecsOf(rs *rules.RuleSet) []RuleSpec {
	specs := make([]RuleSpec, 0, len(rs.Rules))
	for _, r := range rs.Rules {
		specs = append(specs, RuleSpec{
			Name:        r.Name,
			Labels:      r.Labels,
			Annotations: r.Annotations,
			RunbookURL:  r.Annotations["runbook_url"],
			Impact:      r.Impact.Quantity(),
			Severity: func(a Aggregate) (string, error) {
				return r.SeverityOf(rules.Aggregate{Count: a.Count, Customers: a.Customers, Total: a.Total})
			},
		})
	}
	return specs
}
