package main

import (
	"slices"
	"testing"

	"github.com/spf13/pflag"

	"github.com/invmon/invmon/internal/config"
)

// TestRunFlagsAreTheConfigBinding: every flag of `monitor run` that is not
// about the command itself sets a configuration field through
// config.Flags, and every flag name users have scripts for still exists.
func TestRunFlagsAreTheConfigBinding(t *testing.T) {
	cmd := runCmd()
	var bound []string
	for _, f := range config.Flags {
		bound = append(bound, f.Name)
	}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "config" && f.Name != "log-level" && !slices.Contains(bound, f.Name) {
			t.Errorf("flag --%s of monitor run is not in config.Flags", f.Name)
		}
	})
	for _, name := range []string{
		"kafka.brokers", "kafka.group", "kafka.client-id", "kafka.dlq-topic", "kafka.violation-events-topic", "kafka.violations-topic", "kafka.changelog",
		"kafka.instance-id", "kafka.tls", "kafka.tls.ca-file", "kafka.tls.cert-file", "kafka.tls.key-file",
		"kafka.tls.server-name", "kafka.sasl.mechanism", "kafka.sasl.username", "kafka.sasl.password-file",
		"kafka.produce-timeout", "event-time.max-future", "state-dir", "state.cache-size", "state.violation-retention", "rule-files", "http.listen", "http.external-url",
		"web.config.file", "http.open-health-checks", "alertmanager.url", "alertmanager.resend-interval",
		"schema-registry.url", "slo.prometheus-url",
	} {
		if cmd.Flags().Lookup(name) == nil {
			t.Errorf("monitor run lost its flag --%s", name)
		}
	}
	replay := replayCmd()
	for _, name := range []string{"kafka.brokers", "rule-files", "alertmanager.url"} {
		if replay.Flags().Lookup(name) == nil {
			t.Errorf("monitor replay lost its flag --%s", name)
		}
	}
}
