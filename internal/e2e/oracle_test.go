package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/demo"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/rules"
)

// TestOracleOnRealBroker runs the simulator's scenarios through the monitor
// on the real broker and requires the violations API to equal the ground
// truth for every example rule: nothing missed, nothing false, no duplicate.
func TestOracleOnRealBroker(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	cases := []oracleCase{{"friday-rollback", 1}, {"friday-rollback", 2}, {"friday-rollback", 3}, {"clean", 4}, {"lagging-ledger", 5}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/seed%d", c.scenario, c.seed), func(t *testing.T) {
			runOracle(t, brokers, c, rules.FormatJSON, "", 21000)
		})
	}
}

// TestOracleSchemaFormats runs the incident produced as Avro and as
// Protobuf in the Confluent wire format, with the example schemas in a real
// Apicurio Registry, through the same rule files with only `format:` added:
// the violations must equal the ground truth exactly, as for JSON.
func TestOracleSchemaFormats(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	reg := kafkatest.StartSchemaRegistry(t)
	for _, format := range []string{rules.FormatAvro, rules.FormatProtobuf} {
		t.Run(format, func(t *testing.T) {
			runOracle(t, brokers, oracleCase{"friday-rollback", 1}, format, reg.URL(), 8000)
		})
	}
}

type oracleCase struct {
	scenario string
	seed     uint64
}

// runOracle runs one scenario in format through the monitor and compares
// the violations API with the ground truth for every example rule.
func runOracle(t *testing.T, brokers string, c oracleCase, format, registry string, payments int) {
	var am []string
	var hook *kafkatest.WebhookReceiver
	if c.scenario == "lagging-ledger" {
		hook = kafkatest.NewWebhookReceiver(t)
		am = []string{kafkatest.StartAlertmanager(t, hook.URL()).URL()}
	}
	res, err := demo.Run(context.Background(), demo.Options{
		Scenario: c.scenario, Seed: c.seed, Payments: payments, Partitions: 4,
		Brokers: kafkatest.Seeds(brokers), TopicPrefix: fmt.Sprintf("oracle%d-%d-", time.Now().UnixNano(), c.seed),
		Timeout: 3 * time.Minute, AlertmanagerURLs: am, HoldStall: 5 * time.Second,
		Format: format, SchemaRegistry: registry,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.scenario == "lagging-ledger" {
		// One blind alert naming the ledger while it lagged, resolved
		// once it caught up; and no absence violation at all.
		if len(res.Blind) != 1 || res.Blind[0] != "ledger" || len(res.BlindAfter) != 0 {
			t.Errorf("blind during %v, at the end %v: want ledger, then none", res.Blind, res.BlindAfter)
		}
		isBlind := func(status string) func(kafkatest.WebhookAlert) bool {
			return func(a kafkatest.WebhookAlert) bool {
				return a.Status == status && a.Labels["alertname"] == "InvariantMonitorBlind" && a.Labels["stream"] == "ledger"
			}
		}
		hook.WaitFor(t, 20*time.Second, isBlind("firing"))
		hook.WaitFor(t, 20*time.Second, isBlind("resolved"))
		for _, a := range hook.Alerts() {
			if a.Labels["alertname"] != "InvariantMonitorBlind" {
				t.Errorf("unexpected page while the ledger lagged: %s", a)
			}
		}
	}
	if min := payments * 4; res.Events < min {
		t.Fatalf("only %d events; the oracle wants at least %d", res.Events, min)
	}
	if res.DeadLetters != 0 {
		t.Errorf("%d dead letters; the scenario has no poison", res.DeadLetters)
	}
	t.Logf("%d events", res.Events)
	for rule, s := range res.Rules {
		precision, recall := 1.0, 1.0
		if s.Found+s.FalsePositives > 0 {
			precision = float64(s.Found) / float64(s.Found+s.FalsePositives)
		}
		if s.Injected > 0 {
			recall = float64(s.Found) / float64(s.Injected)
		}
		d := res.Delays[rule]
		t.Logf("%-42s injected %4d found %4d missed %d false %d dup %d  precision %.3f recall %.3f  delay(event time) p50 %.1fs p99 %.1fs",
			rule, s.Injected, s.Found, s.Missed, s.FalsePositives, s.Duplicates, precision, recall, d.P50Seconds, d.P99Seconds)
		if s.Missed != 0 || s.FalsePositives != 0 || s.Duplicates != 0 || s.Found != s.Injected || s.ResolvedFound != s.ResolvedExpected {
			t.Errorf("%s: %+v", rule, s)
		}
		if c.scenario != "friday-rollback" && s.Injected != 0 {
			t.Errorf("%s: clean traffic injected %d violations", rule, s.Injected)
		}
		if c.scenario == "friday-rollback" && s.Injected == 0 {
			t.Errorf("%s: the incident injected nothing", rule)
		}
	}
	// The SLI counters are exact: checks and violations per rule, as
	// scraped from /metrics, equal the simulator's counts.
	for rule, n := range res.Checks {
		t.Logf("%-42s checks %6d (truth %6d) violations %4d (truth %4d)", rule, n.Counted, n.Expected, n.Violations, n.ViolationsTruth)
		if n.Counted != n.Expected || n.Violations != n.ViolationsTruth {
			t.Errorf("%s: SLI counters %+v differ from the simulator's", rule, n)
		}
	}
	if len(res.Checks) != 5 {
		t.Errorf("SLI counters for %d rules, want 5", len(res.Checks))
	}
}

// TestLiveDetectionDelay produces an incident as it happens (event time is
// wall time) on the real broker and reports, per rule, how long after a
// deadline the violation was recorded, in wall time and in event time. It
// measures; it asserts only that violations were judged at a deadline.
func TestLiveDetectionDelay(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	res, err := demo.Run(context.Background(), demo.Options{
		Scenario: "friday-rollback", Seed: 6, Payments: 800, Rate: 40, Partitions: 4,
		Live: true, LiveFor: 25 * time.Second,
		Brokers: kafkatest.Seeds(brokers), TopicPrefix: fmt.Sprintf("live%d-", time.Now().UnixNano()),
		Timeout: 3 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.WallDelays) == 0 {
		t.Fatal("no violation was judged at a deadline")
	}
	for rule, d := range res.WallDelays {
		e := res.Delays[rule]
		t.Logf("%-42s n=%3d  wall time p50 %.2fs p99 %.2fs   event time p50 %.2fs p99 %.2fs", rule, d.N, d.P50Seconds, d.P99Seconds, e.P50Seconds, e.P99Seconds)
	}
}
