package alert

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/kafkatest"
)

// TestRealAlertmanager runs the manager on the wall clock against Debian's
// prometheus-alertmanager, whose webhook notifications a test server records.
// Intervals are short (resend every second) so the story takes seconds.
func TestRealAlertmanager(t *testing.T) {
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanager(t, hook.URL())

	cfg := Config{
		URLs:              []string{am.URL()},
		ExternalURL:       externalURL,
		EvalInterval:      100 * time.Millisecond,
		ResendInterval:    time.Second,
		ResolvedRetention: 10 * time.Second,
		ClientConfig: ClientConfig{
			Timeout: 2 * time.Second,
			Backoff: BackoffConfig{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, MaxAttempts: 2},
		},
	}
	m := newManager(t, cfg, memDB(t), nil)
	const orderRule = "fulfilled_order_has_captured_payment"
	if err := m.SetRules([]RuleSpec{paymentRule, {Name: orderRule, Labels: map[string]string{"team": "orders"}}}); err != nil {
		t.Fatal(err)
	}
	m.Seed(nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	isAlert := func(status, alertname string) func(kafkatest.WebhookAlert) bool {
		return func(a kafkatest.WebhookAlert) bool {
			return a.Status == status && a.Labels["alertname"] == alertname
		}
	}

	t.Run("firing reaches the webhook with labels and annotations", func(t *testing.T) {
		v := openViolation(ruleName, "pay-1", "acct-1", 120)
		m.Observe(v)
		firing := hook.WaitFor(t, 20*time.Second, isAlert("firing", ruleName))
		want := map[string]string{"alertname": ruleName, "severity": "page", "team": "payments"}
		if !maps.Equal(firing.Labels, want) {
			t.Fatalf("labels = %v, want %v", firing.Labels, want)
		}
		if firing.Fingerprint != fingerprint(want) {
			t.Errorf("fingerprint = %s, want %s", firing.Fingerprint, fingerprint(want))
		}
		if s := firing.Annotations["summary"]; s != ruleName+": 1 open violation, 1 customer, total impact 120.00 USD" {
			t.Errorf("summary = %q", s)
		}
		if d := firing.Annotations["description"]; !strings.Contains(d, "key=pay-1 customer=acct-1 impact=120.00 USD") {
			t.Errorf("description = %q: want the top entity", d)
		}
		if firing.Annotations["runbook_url"] != paymentRule.RunbookURL {
			t.Errorf("runbook_url = %q", firing.Annotations["runbook_url"])
		}
		if want := externalURL + "/rules/" + ruleName; firing.GeneratorURL != want {
			t.Errorf("generatorURL = %q, want %q", firing.GeneratorURL, want)
		}

		t.Run("resolution arrives as resolved", func(t *testing.T) {
			m.Observe(resolve(v, time.Now()))
			resolved := hook.WaitFor(t, 20*time.Second, isAlert("resolved", ruleName))
			if resolved.Fingerprint != firing.Fingerprint || !resolved.StartsAt.Equal(firing.StartsAt) {
				t.Fatalf("resolved %s (%s) is not the alert that fired: %s (%s)",
					resolved, resolved.Fingerprint, firing, firing.Fingerprint)
			}
			if !resolved.EndsAt.After(resolved.StartsAt) {
				t.Fatalf("resolved alert ends before it starts: %s", resolved)
			}
		})
	})

	t.Run("an alert raised while Alertmanager is down arrives once it is back", func(t *testing.T) {
		am.Stop()
		openedAt := time.Now()
		m.Observe(openViolation(orderRule, "ord-1", "acct-2", 80))
		// Down for more than a resend interval: several ticks fail meanwhile.
		time.Sleep(2*cfg.ResendInterval + 500*time.Millisecond)
		// Taken before Start: Alertmanager accepts and notifies a moment
		// before its readiness poll sees it up, and it cannot notify earlier
		// than this while it is stopped.
		startedAt := time.Now()
		am.Start()
		got := hook.WaitFor(t, 20*time.Second, isAlert("firing", orderRule))
		if got.ReceivedAt.Before(startedAt) {
			t.Fatalf("notified before Alertmanager was back: %s", got)
		}
		// startsAt is when the alert started firing, during the outage, not
		// when it finally got through.
		if got.StartsAt.Before(openedAt.Add(-time.Second)) || got.StartsAt.After(startedAt) {
			t.Fatalf("startsAt %s, want between %s and %s", got.StartsAt, openedAt, startedAt)
		}
	})
}
