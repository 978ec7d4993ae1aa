package monitor_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/alert"
	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/violation"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// securedAlertmanager starts the real Alertmanager behind TLS and basic auth
// (its own --web.config.file) and returns it, the test CA and the webhook
// receiving its notifications.
func securedAlertmanager(t *testing.T) (*kafkatest.Alertmanager, *kafkatest.CA, *kafkatest.WebhookReceiver) {
	t.Helper()
	ca := kafkatest.NewCA(t, "am-ca")
	cert := ca.Server(t, "alertmanager")
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	ready := &http.Client{Timeout: time.Second, Transport: basicAuth{tr, "monitor", "am-password"}}
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanagerWith(t, hook.URL(), kafkatest.AlertmanagerOptions{
		TLS: &cert, Users: map[string]string{"monitor": "am-password"}, ReadyClient: ready,
	})
	return am, ca, hook
}

type basicAuth struct {
	next       http.RoundTripper
	user, pass string
}

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(b.user, b.pass)
	return b.next.RoundTrip(r)
}

// alertmanagerSection loads an alertmanager section, written as an
// alertmanagers: entry of prometheus.yml, through the configuration loader.
func alertmanagerSection(t *testing.T, yaml string) config.Alertmanager {
	t.Helper()
	path := filepath.Join(t.TempDir(), "monitor.yaml")
	body := "kafka: {brokers: [127.0.0.1:1]}\nrule_files: [x.yaml]\nalertmanager:\n" + yaml
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg.Alertmanager
}

func newAlertManager(t *testing.T, am config.Alertmanager) (*alert.Manager, error) {
	t.Helper()
	store, err := joinstate.Open("", joinstate.Options{InMemory: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	acfg := alert.ConfigFrom(am)
	acfg.Backoff = alert.BackoffConfig{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, MaxAttempts: 2}
	// The group view holds the violation these tests page on, as the
	// group's stream would have put it there.
	view := store.GroupView()
	if _, err := view.Apply(1, []violation.Violation{missingLedger}); err != nil {
		t.Fatal(err)
	}
	m, err := alert.NewManager(acfg, store.Namespace(joinstate.AlertNamespace), view, prometheus.NewRegistry(), zap.NewNop())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.SetRules([]alert.RuleSpec{{Name: "captured_payment_has_ledger_entry"}}); err != nil {
		t.Fatal(err)
	}
	m.CaughtUp()
	return m, nil
}

var missingLedger = violation.Violation{
	ID: "v1", Rule: "captured_payment_has_ledger_entry", RuleVersion: "1", Key: "pay-1", State: violation.Open,
	Impact: 120, Customer: "acct-1", TriggerEventID: "ev-1",
}

func TestViolationReachesAlertmanagerOverTLSWithBasicAuth(t *testing.T) {
	am, ca, hook := securedAlertmanager(t)
	pw := filepath.Join(t.TempDir(), "am-password")
	if err := os.WriteFile(pw, []byte("am-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(am.URL(), "https://")
	m, err := newAlertManager(t, alertmanagerSection(t, fmt.Sprintf(`
  scheme: https
  static_configs: [{targets: [%q]}]
  timeout: 5s
  basic_auth: {username: monitor, password_file: %q}
  tls_config: {ca_file: %q, server_name: localhost, min_version: TLS12}
`, host, pw, ca.CertFile)))
	if err != nil {
		t.Fatal(err)
	}
	m.Observe(missingLedger)
	if err := m.Tick(t.Context()); err != nil {
		t.Fatalf("Tick: %v", err)
	}
	got := hook.WaitFor(t, 20*time.Second, func(a kafkatest.WebhookAlert) bool {
		return a.Status == "firing" && a.Labels["alertname"] == "captured_payment_has_ledger_entry"
	})
	if !strings.Contains(got.Annotations["description"], "pay-1") {
		t.Errorf("description %q does not name the entity", got.Annotations["description"])
	}
}

func TestAlertmanagerRefusalsAreClearAndQuick(t *testing.T) {
	am, ca, _ := securedAlertmanager(t)
	for _, tc := range []struct {
		name, section, want string
	}{
		{"wrong password", fmt.Sprintf(`
  urls: [%q]
  basic_auth: {username: monitor, password: wrong}
  tls_config: {ca_file: %q}
`, am.URL(), ca.CertFile), "refused the monitor's credentials (401"},
		{"no credentials", fmt.Sprintf(`
  urls: [%q]
  tls_config: {ca_file: %q}
`, am.URL(), ca.CertFile), "refused the monitor's credentials (401"},
		{"untrusted certificate", fmt.Sprintf(`
  urls: [%q]
  basic_auth: {username: monitor, password: am-password}
`, am.URL()), "certificate signed by unknown authority"},
		{"wrong server name", fmt.Sprintf(`
  urls: [%q]
  basic_auth: {username: monitor, password: am-password}
  tls_config: {ca_file: %q, server_name: alertmanager.example}
`, am.URL(), ca.CertFile), "certificate is valid for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := newAlertManager(t, alertmanagerSection(t, tc.section))
			if err != nil {
				t.Fatal(err)
			}
			m.Observe(missingLedger)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			start := time.Now()
			err = m.Tick(ctx)
			if err == nil {
				t.Fatal("Tick succeeded")
			}
			if !strings.Contains(err.Error(), am.URL()) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want it to name %s and say %q", err, am.URL(), tc.want)
			}
			if strings.Contains(err.Error(), "am-password") {
				t.Errorf("error %q shows the password", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("failing took %s", d)
			}
		})
	}
	// Credentials towards an http:// Alertmanager are refused at start.
	_, err := newAlertManager(t, alertmanagerSection(t, `
  urls: ["http://127.0.0.1:9"]
  basic_auth: {username: monitor, password: am-password}
`))
	if err == nil || !strings.Contains(err.Error(), "plain http") || strings.Contains(err.Error(), "am-password") {
		t.Errorf("basic auth over http: %v", err)
	}
}
