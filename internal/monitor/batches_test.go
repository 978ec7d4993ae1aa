package monitor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
)

// TestConfiguredBatchBoundReachesTheConsumer sets kafka.max_poll_records
// to 7 and produces 100 ledger entries at once: every batch the consumer
// evaluates holds at most 7 of them (so at least 15 batches), where the
// default bound would take them in one or two.
func TestConfiguredBatchBoundReachesTheConsumer(t *testing.T) {
	const bound, n = 7, 100
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	rs, err := rules.LoadFiles("../../rules/no_duplicate_ledger_effect.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The records are in the topic before the member starts, so its first
	// polls could take all of them.
	t0 := time.Now().Add(-time.Hour).UTC()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, record("ledger", "acct-1", map[string]any{
			"entry_id": fmt.Sprintf("le-%d", i), "idempotency_key": fmt.Sprintf("ik-%d", i), "payment_id": fmt.Sprintf("pay-%d", i),
			"account_id": "acct-1", "amount_cents": 100, "direction": "debit", "occurred_at": t0.Add(time.Duration(i) * time.Second).Format(time.RFC3339),
		}))
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := producer.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	cfg := config.Defaults()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.Kafka.MaxPollRecords = bound
	cfg.StateDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	m := runMonitor(t, monitor.Options{Config: cfg, Rules: rs, Logger: zaptest.NewLogger(t)})

	for deadline := time.Now().Add(30 * time.Second); m.Stats().Records < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records handled", m.Stats().Records, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	families, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "invmon_batch_records" {
			continue
		}
		h := f.GetMetric()[0].GetHistogram()
		if h.GetSampleSum() != n || h.GetSampleCount() < (n+bound-1)/bound {
			t.Fatalf("%v records in %d batches, want %d in at least %d", h.GetSampleSum(), h.GetSampleCount(), n, (n+bound-1)/bound)
		}
		// The buckets are powers of 4: none above the one holding 7 may
		// count a batch.
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() >= bound && b.GetCumulativeCount() != h.GetSampleCount() {
				t.Fatalf("%d of %d batches above %v records", h.GetSampleCount()-b.GetCumulativeCount(), h.GetSampleCount(), b.GetUpperBound())
			}
		}
		return
	}
	t.Fatal("no invmon_batch_records metric")
}
