package monitor_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/changes"
	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/violation"
)

// TestAlertingSeededFromTheFeedNotStaleLocalState: the member's local state
// still holds a violation open that another member has since resolved (the
// group's feed says so). Alerting must follow the feed: it never pages on
// the stale violation, not even before the feed has been read.
func TestAlertingSeededFromTheFeedNotStaleLocalState(t *testing.T) {
	const group = "feedseed"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, append([]string{changes.StateTopic(group)}, sim.Topics...)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	stale := violation.Violation{ID: "stale-1", Rule: "captured_payment_has_ledger_entry", Key: "pay-1", State: violation.Open,
		Impact: 20000, Customer: "acct-1", DetectedAt: time.Now().Add(-time.Minute).UTC()}
	resolved := stale
	resolved.State = violation.Resolved
	at := time.Now().UTC()
	resolved.ResolvedAt = &at

	dir := t.TempDir()
	store, err := joinstate.Open(dir, joinstate.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(stale)
	if err := store.Commit(joinstate.PartitionDelta{Partition: 0, Delta: &engine.Delta{Ops: map[string]engine.Op{"v/" + stale.ID: {Value: b}}}}); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	// A violation of another rule, open in the feed: alerting works, and
	// pages on it.
	live := violation.Violation{ID: "live-1", Rule: "no_duplicate_ledger_effect", Key: "k-1", State: violation.Open,
		Impact: 20000, Customer: "acct-2", DetectedAt: time.Now().Add(-time.Minute).UTC()}
	for _, v := range []violation.Violation{stale, live, resolved} {
		b, _ := json.Marshal(v)
		recs = append(recs, &kgo.Record{Topic: changes.StateTopic(group), Key: []byte(v.ID), Value: b})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var posted []string
	am := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		posted = append(posted, string(body))
		mu.Unlock()
	}))
	defer am.Close()

	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.Kafka.Group = group
	cfg.StateDir = dir
	cfg.HTTP.Listen = ""
	cfg.Alertmanager.URLs = []string{am.URL}
	m, err := monitor.New(context.Background(), monitor.Options{Config: cfg, Rules: rs, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.FlushAlerts(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if all := strings.Join(posted, "\n"); !strings.Contains(all, "no_duplicate_ledger_effect") {
		t.Fatalf("the violation open in the feed was not paged; posted: %s", all)
	}
	for _, p := range posted {
		if strings.Contains(p, "captured_payment_has_ledger_entry") && !strings.Contains(p, "InvariantMonitorBlind") {
			t.Fatalf("paged on a violation the feed says is resolved: %s", p)
		}
	}
}
