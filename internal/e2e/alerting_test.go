package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/kafkatest"
)

// duplicateRule is the example unique rule, appended to the test's rule file
// so that a second alert can start while an Alertmanager is down.
const duplicateRule = `
  - name: no_duplicate_ledger_effect
    kind: unique
    on: {stream: ledger, key: event.idempotency_key}
    window: 24h
    labels: {team: payments}
    impact: {value: double(event.amount_cents) / 100.0, customer: event.account_id, unit: USD}
`

// amAlert is what Alertmanager's v2 API says of an alert.
type amAlert struct {
	Fingerprint string            `json:"fingerprint"`
	StartsAt    time.Time         `json:"startsAt"`
	Labels      map[string]string `json:"labels"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

func activeAlerts(t *testing.T, amURL string) map[string]amAlert {
	t.Helper()
	resp, err := http.Get(amURL + "/api/v2/alerts?active=true&silenced=false&inhibited=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var as []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&as); err != nil {
		t.Fatal(err)
	}
	out := map[string]amAlert{}
	for _, a := range as {
		out[a.Labels["alertname"]+"/"+a.Labels["severity"]] = a
	}
	return out
}

// TestAlertLifecycleThroughTheMonitor drives the monitor binary against the
// real broker and two real Alertmanagers (an HA pair): impact escalation from
// ticket to page, a SIGKILL mid-incident that keeps the alerts' identity, an
// Alertmanager outage longer than the resend interval, and the resolution.
func TestAlertLifecycleThroughTheMonitor(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	prefix := fmt.Sprintf("alerts%d-", time.Now().UnixNano())
	kafkatest.CreateTopics(t, brokers, 2, prefix+"payments", prefix+"ledger")
	hooks := []*kafkatest.WebhookReceiver{kafkatest.NewWebhookReceiver(t), kafkatest.NewWebhookReceiver(t)}
	ams := []*kafkatest.Alertmanager{kafkatest.StartAlertmanager(t, hooks[0].URL()), kafkatest.StartAlertmanager(t, hooks[1].URL())}

	dir := t.TempDir()
	ruleFile := writeRules(t, dir, prefix)
	b, err := os.ReadFile(ruleFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ruleFile, append(b, duplicateRule...), 0o644); err != nil {
		t.Fatal(err)
	}
	mon := launchMonitor(t, dir, "monitor", func(httpAddr string) string {
		return fmt.Sprintf(`kafka: {brokers: [%q], group: %s, instance_id: alerts}
state_dir: %s
rule_files: [%q]
http: {listen: %q, external_url: "http://%s"}
alertmanager: {urls: [%q, %q], resend_interval: 2s}
`, brokers, prefix+"group", filepath.Join(dir, "state"), ruleFile, httpAddr, httpAddr, ams[0].URL(), ams[1].URL())
	})
	produce := producerTo(t, brokers, prefix, "acct")
	capture := func(id, account string, cents int, at time.Time) {
		t.Helper()
		produce("payments", fmt.Sprintf(`{"event_id":"%s-c","payment_id":"%s","account_id":"%s","status":"captured","amount_cents":%d,"occurred_at":"%s"}`,
			id, id, account, cents, at.UTC().Format(time.RFC3339Nano)))
	}
	book := func(entry, id, idem, account string, at time.Time) {
		t.Helper()
		produce("ledger", fmt.Sprintf(`{"entry_id":"%s","idempotency_key":"%s","payment_id":"%s","account_id":"%s","amount_cents":2500,"direction":"credit","occurred_at":"%s"}`,
			entry, idem, id, account, at.UTC().Format(time.RFC3339Nano)))
	}
	alert := func(status, name, severity string, check func(kafkatest.WebhookAlert) bool) func(kafkatest.WebhookAlert) bool {
		return func(a kafkatest.WebhookAlert) bool {
			return a.Status == status && a.Labels["alertname"] == name && a.Labels["severity"] == severity && (check == nil || check(a))
		}
	}
	count := func(n string) func(kafkatest.WebhookAlert) bool {
		return func(a kafkatest.WebhookAlert) bool { return a.Annotations["open_violations"] == n }
	}

	// 1. A small incident pages as a ticket, with the numbers a responder needs.
	capture("pay-1", "acct-1", 2500, time.Now())
	for i, h := range hooks {
		a := h.WaitFor(t, 30*time.Second, alert("firing", rule, "ticket", count("1")))
		if a.Annotations["customers"] != "1" || a.Annotations["total_impact"] != "25.00" {
			t.Errorf("Alertmanager %d: ticket annotations %v: want 1 customer and a total impact of 25", i, a.Annotations)
		}
	}
	// It grows past 10000 USD: the page fires and the ticket resolves.
	now := time.Now()
	for i := 2; i <= 4; i++ {
		capture(fmt.Sprintf("pay-%d", i), fmt.Sprintf("acct-%d", i), 420000, now)
	}
	for i, h := range hooks {
		a := h.WaitFor(t, 30*time.Second, alert("firing", rule, "page", count("4")))
		if a.Annotations["customers"] != "4" || a.Annotations["total_impact"] != "12625.00" {
			t.Errorf("Alertmanager %d: page annotations %v: want 4 customers and 12625 USD", i, a.Annotations)
		}
		h.WaitFor(t, 30*time.Second, alert("resolved", rule, "ticket", nil))
	}

	// 2. Killed mid-incident, the monitor comes back with the same alert: the
	// same fingerprint and startsAt at Alertmanager, and no resolution.
	before := activeAlerts(t, ams[0].URL())[rule+"/page"]
	if before.Fingerprint == "" {
		t.Fatalf("no active page at Alertmanager: %v", activeAlerts(t, ams[0].URL()))
	}
	mon.kill()
	mon.start()
	time.Sleep(5 * time.Second) // two resend intervals
	after := activeAlerts(t, ams[0].URL())[rule+"/page"]
	if after.Fingerprint != before.Fingerprint || !after.StartsAt.Equal(before.StartsAt) || after.Status.State != "active" {
		t.Fatalf("after the restart the page is %+v, was %+v", after, before)
	}
	for _, h := range hooks {
		for _, a := range h.Alerts() {
			if a.Status == "resolved" && a.Labels["severity"] == "page" {
				t.Fatalf("the restart resolved the page: %s", a)
			}
		}
	}

	// 3. The second Alertmanager is down for longer than the resend interval
	// while a new alert starts; it gets it once it is back.
	ams[1].Stop()
	book("le-x1", "pay-x", "idem-x", "acct-9", time.Now())
	book("le-x2", "pay-x", "idem-x", "acct-9", time.Now())
	hooks[0].WaitFor(t, 30*time.Second, alert("firing", "no_duplicate_ledger_effect", "page", nil))
	time.Sleep(5 * time.Second)
	back := time.Now()
	ams[1].Start()
	a := hooks[1].WaitFor(t, 30*time.Second, alert("firing", "no_duplicate_ledger_effect", "page", nil))
	if a.ReceivedAt.Before(back) {
		t.Fatalf("received before the Alertmanager was back: %s", a)
	}

	// 4. Late ledger entries repair every payment: the page resolves at both.
	for i := 1; i <= 4; i++ {
		book(fmt.Sprintf("le-%d", i), fmt.Sprintf("pay-%d", i), fmt.Sprintf("idem-%d", i), fmt.Sprintf("acct-%d", i), time.Now())
	}
	for _, h := range hooks {
		h.WaitFor(t, 30*time.Second, alert("resolved", rule, "page", nil))
	}
}
