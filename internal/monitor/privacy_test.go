package monitor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/privacy"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/server"
)

// TestRedactionHidesInjectedIDs runs the monitor with privacy.identifiers
// hmac and impact bands on an in-process Kafka cluster and the real
// Alertmanager. Captured payments without ledger entries fire; then the
// API, the notifications Alertmanager sends on, the violations topic and
// /metrics are searched for the injected payment ids, account ids and event
// ids: none may appear. A lookup by the plain account id (the API hashes
// it), and by the token `monitor redact lookup` prints, finds the violation.
func TestRedactionHidesInjectedIDs(t *testing.T) {
	const hmacKey = "k3y-for-the-redaction-test-0123456789"
	keyFile := filepath.Join(t.TempDir(), "hmac.key")
	if err := os.WriteFile(keyFile, []byte(hmacKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "payments", "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanager(t, hook.URL())

	rs, err := rules.LoadFiles("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.Kafka.ViolationEventsTopic = "violations"
	cfg.StateDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Alertmanager.URLs = []string{am.URL()}
	cfg.Privacy = privacy.Config{Identifiers: privacy.HMAC, HMACKeyFile: keyFile, ImpactBands: []float64{100, 1000, 10000}}
	m := runMonitor(t, monitor.Options{Config: cfg, Rules: rs, Logger: zaptest.NewLogger(t)})

	// Three captures without a ledger entry, then traffic on both streams
	// five minutes later, which moves the watermark past their deadlines.
	var secrets []string
	t0 := time.Now().Add(-time.Hour).UTC()
	var recs []*kgo.Record
	for i := range 3 {
		pay, acct, ev := fmt.Sprintf("pay-SECRET-%d", i), fmt.Sprintf("acct-SECRET-%d", i), fmt.Sprintf("ev-SECRET-%d", i)
		secrets = append(secrets, pay, acct, ev)
		recs = append(recs, record("payments", acct, map[string]any{
			"event_id": ev, "payment_id": pay, "account_id": acct, "status": "captured",
			"amount_cents": 250000 + i, "currency": "USD", "occurred_at": t0.Format(time.RFC3339),
		}))
	}
	later := t0.Add(5 * time.Minute).Format(time.RFC3339)
	recs = append(recs,
		record("payments", "acct-filler", map[string]any{"event_id": "ev-f", "payment_id": "pay-f", "account_id": "acct-filler",
			"status": "pending", "amount_cents": 1, "currency": "USD", "occurred_at": later}),
		record("ledger", "acct-filler", map[string]any{"entry_id": "le-f", "idempotency_key": "ik-f", "payment_id": "pay-f",
			"account_id": "acct-filler", "amount_cents": 1, "direction": "debit", "occurred_at": later}))
	producer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := producer.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	api := "http://" + m.HTTPAddr()
	var list server.ViolationList
	deadline := time.Now().Add(30 * time.Second)
	for len(list.Violations) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("violations in the API: %d, want 3", len(list.Violations))
		}
		time.Sleep(100 * time.Millisecond)
		list = server.ViolationList{}
		if err := json.Unmarshal(get(t, api+"/api/v1/violations?state=all"), &list); err != nil {
			t.Fatal(err)
		}
	}

	// The alert and the violations topic follow the same commit.
	hook.WaitFor(t, 30*time.Second, func(a kafkatest.WebhookAlert) bool {
		return a.Labels["alertname"] == "captured_payment_has_ledger_entry"
	})
	topic := readTopic(t, cluster.ListenAddrs(), "violations", 3)

	payloads, err := json.Marshal(hook.Payloads())
	if err != nil {
		t.Fatal(err)
	}
	surfaces := map[string]string{
		"API list":          string(get(t, api+"/api/v1/violations?state=all")),
		"API by id":         string(get(t, api+"/api/v1/violations/"+list.Violations[0].ID)),
		"Alertmanager":      string(payloads),
		"violations topic":  topic,
		"/metrics":          string(get(t, api+"/metrics")),
		"console overview":  string(get(t, api+"/")),
		"console rule page": string(get(t, api+"/rules/captured_payment_has_ledger_entry?state=all")),
		"console violation": string(get(t, api+"/violations/"+list.Violations[0].ID)),
	}
	for name, body := range surfaces {
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("%s shows %q", name, s)
			}
		}
		if strings.Contains(body, "2500.0") || strings.Contains(body, "2,500.0") {
			t.Errorf("%s shows an exact amount", name)
		}
	}
	if !strings.Contains(surfaces["Alertmanager"], "hmac:") || !strings.Contains(surfaces["violations topic"], "hmac:") {
		t.Errorf("tokens missing from the alert or the topic: the search above proves nothing")
	}
	for _, v := range list.Violations {
		if v.ImpactBand != "1000-10000" || v.Impact != 1000 {
			t.Errorf("impact %v band %q, want the 1000-10000 band", v.Impact, v.ImpactBand)
		}
	}

	// Lookup: by the plain account id, which the API hashes, and by the
	// token that `monitor redact lookup` prints.
	var byCustomer server.ViolationList
	if err := json.Unmarshal(get(t, api+"/api/v1/violations?customer=acct-SECRET-1"), &byCustomer); err != nil {
		t.Fatal(err)
	}
	key := privacy.Token([]byte(hmacKey), "pay-SECRET-1")
	if len(byCustomer.Violations) != 1 || byCustomer.Violations[0].Key != key ||
		byCustomer.Violations[0].Customer != privacy.Token([]byte(hmacKey), "acct-SECRET-1") {
		t.Fatalf("lookup by plain customer id: %+v", byCustomer)
	}
	var byToken server.ViolationList
	if err := json.Unmarshal(get(t, api+"/api/v1/violations?key="+url.QueryEscape(key)), &byToken); err != nil {
		t.Fatal(err)
	}
	if len(byToken.Violations) != 1 || byToken.Violations[0].ID != byCustomer.Violations[0].ID {
		t.Fatalf("lookup by key token: %+v", byToken)
	}
	if !strings.Contains(surfaces["violations topic"], key) || !strings.Contains(surfaces["Alertmanager"], key) {
		t.Errorf("the token of pay-SECRET-1 is not in the topic and the alert: an operator with the key cannot find it there")
	}
}

func record(topic, key string, value map[string]any) *kgo.Record {
	b, _ := json.Marshal(value)
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: b}
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

// readTopic returns every record of topic (keys, values, headers) as text,
// once at least n records are there.
func readTopic(t *testing.T, brokers []string, topic string, n int) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("violations topic: %d records, want %d", got, n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got++
			fmt.Fprintf(&b, "%s %s", r.Key, r.Value)
			for _, h := range r.Headers {
				fmt.Fprintf(&b, " %s=%s", h.Key, h.Value)
			}
			b.WriteByte('\n')
		})
	}
	return b.String()
}
