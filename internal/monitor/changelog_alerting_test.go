package monitor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/alert"
	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
)

// alertSink is an Alertmanager API v2 endpoint that keeps every distinct
// alert posted to it: labels, the annotations a responder reads, and
// whether it was firing or resolved.
type alertSink struct {
	mu   sync.Mutex
	seen []string
	now  func() time.Time
}

func (s *alertSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var as []alert.Alert
	if err := json.NewDecoder(r.Body).Decode(&as); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range as {
		state := "firing"
		if !a.EndsAt.After(s.now()) {
			state = "resolved"
		}
		d := fmt.Sprintf("%s %v summary=%q", state, a.Labels, a.Annotations["summary"])
		if !slices.Contains(s.seen, d) {
			s.seen = append(s.seen, d)
		}
	}
}

func (s *alertSink) has(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.seen, func(d string) bool { return strings.HasPrefix(d, prefix) })
}

// alertsWith runs one monitor with kafka.changelog set as given over a
// captured payment whose ledger entry comes late, and returns the distinct
// alerts Alertmanager received: the page when the deadline passes, and the
// resolution once the entry arrives.
func alertsWith(t *testing.T, changelog bool) []string {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "payments", "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	rs, err := rules.LoadFiles("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	sink := &alertSink{now: now}
	am := httptest.NewServer(sink)
	t.Cleanup(am.Close)

	cfg := config.Defaults()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.Kafka.Group = "g"
	cfg.Kafka.Changelog = changelog
	cfg.StateDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Alertmanager.URLs = []string{am.URL}
	m, err := monitor.New(context.Background(), monitor.Options{Config: cfg, Rules: rs, Now: now,
		TickInterval: 50 * time.Millisecond, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		m.Close()
	})

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	produce := func(topic, value string) {
		t.Helper()
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte("acct-1"), Value: []byte(value)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	at := func(d time.Duration) string { return start.Add(d).Format(time.RFC3339) }
	produce("payments", `{"event_id":"e1","payment_id":"p1","account_id":"acct-1","status":"captured","amount_cents":420000,"currency":"USD","occurred_at":"`+at(0)+`"}`)
	// The clock moves on while no input arrives: the idle inputs let the
	// watermark follow it past the 30 s deadline.
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("changelog=%v: %s not seen; alerts %v", changelog, what, sink.seen)
			}
			clock.Add(int64(time.Second))
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("the page", func() bool { return sink.has("firing") })
	produce("ledger", `{"entry_id":"l1","payment_id":"p1","account_id":"acct-1","amount_cents":420000,"direction":"credit","occurred_at":"`+at(40*time.Second)+`"}`)
	wait("the resolution", func() bool { return sink.has("resolved") })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	return slices.Clone(sink.seen)
}

// TestChangelogSettingChangesNothingAboutAlerting: with kafka.changelog on,
// alerting follows the group's violation feed; off, this member's commits.
// For one member the pages must be the same either way.
func TestChangelogSettingChangesNothingAboutAlerting(t *testing.T) {
	on, off := alertsWith(t, true), alertsWith(t, false)
	if strings.Join(on, "\n") != strings.Join(off, "\n") {
		t.Fatalf("alerts differ\nchangelog on:\n%s\nchangelog off:\n%s", strings.Join(on, "\n"), strings.Join(off, "\n"))
	}
	if len(on) == 0 || !strings.HasPrefix(on[0], "firing") {
		t.Fatalf("no page: %v", on)
	}
	t.Logf("alerts either way:\n%s", strings.Join(on, "\n"))
}
