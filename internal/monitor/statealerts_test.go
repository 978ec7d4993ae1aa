package monitor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// TestAlertsReadOpenViolationsFromStateWithoutChangelog: without the
// changelog one member owns every partition, and alerting reads the open
// violations the state holds when the monitor starts (written on two
// partitions, one resolved) from the state itself: the first alert carries
// their count, customers and total, before any record is consumed.
func TestAlertsReadOpenViolationsFromStateWithoutChangelog(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, sim.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	const rule = "captured_payment_has_ledger_entry"
	detected := time.Now().Add(-time.Minute).UTC()
	open := func(key, customer string, impact float64) violation.Violation {
		return violation.Violation{ID: violation.ID(rule, "1", key, "ev-"+key), Rule: rule, Key: key, State: violation.Open,
			Impact: impact, Customer: customer, TriggerEventID: "ev-" + key, DetectedAt: detected}
	}
	done := open("pay-9", "acct-9", 5000)
	done.State = violation.Resolved
	done.ResolvedAt = &detected
	dir := t.TempDir()
	store, err := joinstate.Open(dir, joinstate.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for p, vs := range map[int32][]violation.Violation{0: {open("pay-1", "acct-1", 100), done}, 1: {open("pay-2", "acct-2", 25.5)}} {
		ops := map[string]engine.Op{}
		for i := range vs {
			b, _ := json.Marshal(&vs[i])
			ops[statekey.Violation+vs[i].ID] = engine.Op{Value: b}
			for _, k := range statekey.IndexKeys(&vs[i]) {
				ops[k] = engine.Op{Value: []byte{}}
			}
		}
		if err := store.Commit(joinstate.PartitionDelta{Partition: p, Delta: &engine.Delta{Ops: ops}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	// The real Alertmanager: the monitor posts to it, and its webhook shows
	// what it received, exactly as an operator's receiver would see it.
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanager(t, hook.URL())
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.Kafka.Changelog = false
	cfg.StateDir = dir
	cfg.HTTP.Listen = ""
	cfg.Alertmanager.URLs = []string{am.URL()}
	m, err := monitor.New(context.Background(), monitor.Options{Config: cfg, Rules: rs, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.FlushAlerts(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := hook.WaitFor(t, 30*time.Second, func(a kafkatest.WebhookAlert) bool {
		return a.Status == "firing" && a.Labels["alertname"] == rule
	})
	ann := got.Annotations
	if ann["open_violations"] != "2" || ann["customers"] != "2" || ann["total_impact"] != "125.50" {
		t.Fatalf("open_violations %q customers %q total_impact %q, want 2, 2, 125.50", ann["open_violations"], ann["customers"], ann["total_impact"])
	}
}
