package monitor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/changes"
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

// TestAlertsPageOnTheGroupsStreamNotLocalState: with kafka.changelog off,
// alerting still pages on the group's violations as the group's stream has
// them, not on this member's local state. The stream holds two open
// violations of other members (two customers, 125.50 in all) and one that
// opened and was resolved since; the local state still holds that one
// open. The first and every page Alertmanager receives carries exactly the
// stream's two, so nothing was paged on the stale state nor before the
// group view caught up.
func TestAlertsPageOnTheGroupsStreamNotLocalState(t *testing.T) {
	const group, rule = "streamalerts", "captured_payment_has_ledger_entry"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, append([]string{changes.StateTopic(group)}, sim.Topics...)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	detected := time.Now().Add(-time.Minute).UTC()
	open := func(key, customer string, impact float64) violation.Violation {
		return violation.Violation{ID: violation.ID(rule, "1", key, "ev-"+key), Rule: rule, Key: key, State: violation.Open,
			Impact: impact, Customer: customer, TriggerEventID: "ev-" + key, DetectedAt: detected}
	}
	stale := open("pay-9", "acct-9", 5000)
	resolved := stale
	resolved.State = violation.Resolved
	resolved.ResolvedAt = &detected

	dir := t.TempDir()
	store, err := joinstate.Open(dir, joinstate.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(stale)
	ops := map[string]engine.Op{statekey.Violation + stale.ID: {Value: b}}
	for _, k := range statekey.IndexKeys(&stale) {
		ops[k] = engine.Op{Value: []byte{}}
	}
	if err := store.Commit(joinstate.PartitionDelta{Partition: 0, Delta: &engine.Delta{Ops: ops}}); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := changes.Records(group, []violation.Violation{stale, open("pay-1", "acct-1", 100), resolved, open("pay-2", "acct-2", 25.5)})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
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
	cfg.Kafka.Group = group
	cfg.Kafka.Changelog = false
	cfg.StateDir = dir
	cfg.HTTP.Listen = ""
	cfg.Alertmanager.URLs = []string{am.URL()}
	m, err := monitor.New(context.Background(), monitor.Options{Config: cfg, Rules: rs, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		m.Close()
	}()
	got := hook.WaitFor(t, 30*time.Second, func(a kafkatest.WebhookAlert) bool {
		return a.Status == "firing" && a.Labels["alertname"] == rule
	})
	ann := got.Annotations
	if ann["open_violations"] != "2" || ann["customers"] != "2" || ann["total_impact"] != "125.50" {
		t.Fatalf("open_violations %q customers %q total_impact %q, want 2, 2, 125.50", ann["open_violations"], ann["customers"], ann["total_impact"])
	}
	for _, a := range hook.Alerts() {
		if a.Labels["alertname"] == rule && a.Annotations["open_violations"] != "2" {
			t.Fatalf("a page other than the stream's two: %s %v", a.Status, a.Annotations)
		}
	}
	if vs, err := m.GroupViolations(joinstate.Filter{State: violation.Open}); err != nil || len(vs) != 2 {
		t.Fatalf("the group view (what the API serves) holds %d open violations, %v; want 2", len(vs), err)
	}
}
