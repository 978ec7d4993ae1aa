package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/replay/replaytest"
	"github.com/invmon/invmon/internal/report"
	"github.com/invmon/invmon/internal/sim"
)

// secureKafkaYAML is the kafka section of a monitor configuration that
// reaches the secure broker's SASL_SSL listener with SCRAM-SHA-512, the
// password read from a file.
func secureKafkaYAML(b *kafkatest.SecureBroker, group, passwordFile, caFile string) string {
	return fmt.Sprintf(`kafka:
  brokers: [%q]
  group: %s
  violation_events_topic: %s
  tls:
    enabled: true
    ca_file: %q
    server_name: %s
  sasl:
    mechanism: SCRAM-SHA-512
    username: %s
    password_file: %q
`, b.SASLAddr, group, group+"-violations", caFile, b.ServerName, b.User, passwordFile)
}

// withBasicAuth adds basic-auth credentials to every request.
type withBasicAuth struct {
	next       http.RoundTripper
	user, pass string
}

func (b withBasicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(b.user, b.pass)
	return b.next.RoundTrip(r)
}

// readSecure reads topic from its start over the SASL_SSL listener with the
// monitor's own client options, until want records arrived or 20 s passed.
func readSecure(t *testing.T, b *kafkatest.SecureBroker, k config.Kafka, topic string, want int) []*kgo.Record {
	t.Helper()
	opts, err := kafkaconn.Options(k)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.SASLAddr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for deadline := time.Now().Add(20 * time.Second); len(out) < want && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("read %s[%d] over SASL_SSL: %v", topic, p, err)
			}
		})
		out = append(out, fs.Records()...)
	}
	return out
}

// TestMonitorOverSASLSSL runs the monitor against the broker's SASL_SSL
// listener with SCRAM-SHA-512 (TLS verified against the test CA under the
// broker's name, the password from a file) and nothing else: it consumes,
// writes its changelog, dead-letter and violations topics, and pages the
// Alertmanager, over TLS with basic auth, about the missing ledger entry.
func TestMonitorOverSASLSSL(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	prefix := fmt.Sprintf("sec%d-", time.Now().UnixNano())
	// Setup through the PLAINTEXT listener; the monitor only knows SASL_SSL.
	kafkatest.CreateTopics(t, b.Addr(), 2, prefix+"payments", prefix+"ledger")
	dir := t.TempDir()
	passwordFile := filepath.Join(dir, "kafka-password")
	amPasswordFile := filepath.Join(dir, "alertmanager-password")
	for file, pw := range map[string]string{passwordFile: b.Password, amPasswordFile: "am-password"} {
		if err := os.WriteFile(file, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The Alertmanager serves HTTPS only and wants basic auth (its own
	// --web.config.file), from a CA of its own.
	amCA := kafkatest.NewCA(t, "am-ca")
	amCert := amCA.Server(t, "alertmanager")
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: amCA.Pool(), MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanagerWith(t, hook.URL(), kafkatest.AlertmanagerOptions{
		TLS: &amCert, Users: map[string]string{"monitor": "am-password"},
		ReadyClient: &http.Client{Timeout: time.Second, Transport: withBasicAuth{tr, "monitor", "am-password"}},
	})
	amHost := strings.TrimPrefix(am.URL(), "https://")
	group := prefix + "group"
	ruleFile := writeRules(t, dir, prefix)
	kafkaYAML := secureKafkaYAML(b, group, passwordFile, b.CA.CertFile)
	mon := launchMonitor(t, dir, "monitor", func(httpAddr string) string {
		return kafkaYAML + fmt.Sprintf(`state_dir: %s
rule_files: [%q]
http: {listen: %q, external_url: "http://%s"}
alertmanager:
  scheme: https
  static_configs: [{targets: [%q]}]
  resend_interval: 2s
  basic_auth: {username: monitor, password_file: %q}
  tls_config: {ca_file: %q}
`, filepath.Join(dir, "state"), ruleFile, httpAddr, httpAddr, amHost, amPasswordFile, amCA.CertFile)
	})

	produce := producerTo(t, b.Addr(), prefix, "acct-7")
	start := time.Now()
	produce("payments", payment("pay-ok", start))
	produce("ledger", ledger("pay-ok", start.Add(time.Second)))
	produce("payments", payment("pay-missing", start))
	produce("payments", `{"event_id": "not json`)

	deadline := start.Add(within)
	hook.WaitFor(t, time.Until(deadline.Add(15*time.Second)), func(a kafkatest.WebhookAlert) bool {
		return a.Status == "firing" && a.Labels["alertname"] == rule
	})
	if got := mon.violations(t); len(got) != 1 || got["pay-missing"] != "open" {
		t.Fatalf("violations %v: want only pay-missing open", got)
	}

	// What the monitor wrote, read back over SASL_SSL with its own settings.
	k := config.Kafka{
		TLS:  config.TLS{Enabled: true, Config: promconfig.TLSConfig{CAFile: b.CA.CertFile, ServerName: b.ServerName}},
		SASL: config.SASL{Mechanism: "SCRAM-SHA-512", Username: b.User, PasswordFile: passwordFile},
	}
	if dlq := readSecure(t, b, k, group+".dlq", 1); len(dlq) != 1 || !strings.Contains(string(dlq[0].Value), "not json") {
		t.Errorf("dead-letter topic: %d records, want the one malformed payment", len(dlq))
	}
	if cl := readSecure(t, b, k, group+".changelog", 1); len(cl) == 0 {
		t.Error("changelog topic is empty")
	}
	opened := 0
	for _, r := range readSecure(t, b, k, group+"-violations", 1) {
		if strings.Contains(string(r.Value), `"key":"pay-missing"`) {
			opened++
		}
	}
	if opened != 1 {
		t.Errorf("violations topic holds %d records of pay-missing, want 1", opened)
	}
}

// TestMonitorOverMutualTLS runs the monitor against the listener that
// requires a client certificate, with no SASL: the certificate is the
// credential.
func TestMonitorOverMutualTLS(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	prefix := fmt.Sprintf("mtls%d-", time.Now().UnixNano())
	kafkatest.CreateTopics(t, b.Addr(), 2, prefix+"payments", prefix+"ledger")
	dir := t.TempDir()
	ruleFile := writeRules(t, dir, prefix)
	mon := launchMonitor(t, dir, "monitor", func(httpAddr string) string {
		return fmt.Sprintf(`kafka:
  brokers: [%q]
  group: %s
  tls: {enabled: true, ca_file: %q, server_name: %s, cert_file: %q, key_file: %q}
state_dir: %s
rule_files: [%q]
http: {listen: %q}
`, b.MTLSAddr, prefix+"group", b.CA.CertFile, b.ServerName, b.Client.CertFile, b.Client.KeyFile,
			filepath.Join(dir, "state"), ruleFile, httpAddr)
	})
	produce := producerTo(t, b.Addr(), prefix, "acct-7")
	produce("payments", payment("pay-missing", time.Now()))
	waitFor(t, within+20*time.Second, func() bool { return mon.violations(t)["pay-missing"] == "open" })
}

// TestMonitorRefusesBadKafkaCredentials: with a wrong password, and with a
// CA that did not sign the broker's certificate, `monitor run` exits within
// seconds with an error that names the broker and the cause, and shows no
// password.
func TestMonitorRefusesBadKafkaCredentials(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	bin := buildMonitor(t)
	dir := t.TempDir()
	ruleFile := writeRules(t, dir, "bad-")
	right := filepath.Join(dir, "right-password")
	wrong := filepath.Join(dir, "wrong-password")
	const wrongPassword = "not-the-password-4711"
	for file, pw := range map[string]string{right: b.Password, wrong: wrongPassword} {
		if err := os.WriteFile(file, []byte(pw), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, password, ca, want string
	}{
		{"wrong password", wrong, b.CA.CertFile, "SASL_AUTHENTICATION_FAILED"},
		{"untrusted certificate", right, b.Untrusted.CertFile, "certificate signed by unknown authority"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "monitor.yaml")
			body := secureKafkaYAML(b, "bad-group", c.password, c.ca) + fmt.Sprintf("state_dir: %s\nrule_files: [%q]\nhttp: {listen: \"127.0.0.1:0\"}\n",
				filepath.Join(t.TempDir(), "state"), ruleFile)
			if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			began := time.Now()
			out, err := exec.CommandContext(ctx, bin, "run", "--config", cfg).CombinedOutput()
			took := time.Since(began)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || ctx.Err() != nil {
				t.Fatalf("monitor did not fail on its own within 60s (%v):\n%s", err, out)
			}
			msg := string(out)
			if !strings.Contains(msg, "kafka broker "+b.SASLAddr) || !strings.Contains(msg, c.want) || took > 20*time.Second {
				t.Fatalf("exit %d after %s; want the broker %s and %q within 20s:\n%s", exit.ExitCode(), took, b.SASLAddr, c.want, msg)
			}
			if strings.Contains(msg, wrongPassword) || strings.Contains(msg, b.Password) {
				t.Fatalf("output shows a password:\n%s", msg)
			}
			t.Logf("exit %d after %s: %s", exit.ExitCode(), took.Round(time.Millisecond), strings.TrimSpace(msg[strings.LastIndex(strings.TrimSpace(msg), "\n")+1:]))
		})
	}
}

// TestSimulateOverSASLSSL: `monitor simulate --config` reaches the cluster
// with the configuration's TLS and SASL, like `monitor run`.
func TestSimulateOverSASLSSL(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "kafka-password")
	if err := os.WriteFile(pw, []byte(b.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "monitor.yaml")
	if err := os.WriteFile(cfg, []byte(secureKafkaYAML(b, "sim", pw, b.CA.CertFile)+"rule_files: [r.yaml]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	topics := []string{sim.TopicPayments, sim.TopicLedger, sim.TopicOrders, sim.TopicEntitlements, sim.TopicAccounts}
	before := endOffsets(t, b.Addr(), topics)
	out, err := exec.Command(buildMonitor(t), "simulate", "--config", cfg, "--scenario", "clean", "--payments", "20").CombinedOutput()
	if err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	var produced int64
	if _, err := fmt.Sscanf(string(out), "produced %d events", &produced); err != nil || produced == 0 {
		t.Fatalf("simulate output %q", out)
	}
	if got := endOffsets(t, b.Addr(), topics) - before; got != produced {
		t.Fatalf("the topics grew by %d records; simulate says it produced %d", got, produced)
	}
}

// endOffsets sums the end offsets of every partition of topics.
func endOffsets(t *testing.T, brokers string, topics []string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topics...)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n
}

// readyz returns /readyz's status and body.
func (m *monitorProc) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + m.http + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestMonitorUnreadyWhileKafkaRefusesCredentials changes the monitor's SCRAM
// password on the broker under a running monitor: within seconds /readyz
// answers 503 saying why and the log names the broker and the cause; the
// new password written to the password file brings it back to ready without
// a restart, and it consumes again.
func TestMonitorUnreadyWhileKafkaRefusesCredentials(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	prefix := fmt.Sprintf("rot%d-", time.Now().UnixNano())
	user := strings.TrimSuffix(prefix, "-")
	setPassword := func(pw string) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		res, err := kadm.NewClient(cl).AlterUserSCRAMs(context.Background(), nil,
			[]kadm.UpsertSCRAM{{User: user, Mechanism: kadm.ScramSha512, Iterations: 4096, Password: pw}})
		if err == nil {
			err = res.Error()
		}
		if err != nil {
			t.Fatalf("set the SCRAM password of %s: %v", user, err)
		}
	}
	setPassword("first-password")
	kafkatest.CreateTopics(t, b.Addr(), 2, prefix+"payments", prefix+"ledger")
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "kafka-password")
	if err := os.WriteFile(pwFile, []byte("first-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ruleFile := writeRules(t, dir, prefix)
	mon := launchMonitor(t, dir, "monitor", func(httpAddr string) string {
		return fmt.Sprintf(`kafka:
  brokers: [%q]
  group: %s
  tls: {enabled: true, ca_file: %q, server_name: %s}
  sasl: {mechanism: SCRAM-SHA-512, username: %s, password_file: %q}
state_dir: %s
rule_files: [%q]
http: {listen: %q}
`, b.SASLAddr, prefix+"group", b.CA.CertFile, b.ServerName, user, pwFile, filepath.Join(dir, "state"), ruleFile, httpAddr)
	})

	setPassword("second-password")
	changed := time.Now()
	waitFor(t, 30*time.Second, func() bool {
		code, body := mon.readyz(t)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "refuses the monitor's credentials")
	})
	t.Logf("unready %.1fs after the password changed on the broker", time.Since(changed).Seconds())
	logged := mon.logTail()
	if !strings.Contains(logged, "kafka broker refuses the monitor's credentials") || !strings.Contains(logged, b.SASLAddr) ||
		!strings.Contains(logged, "SASL_AUTHENTICATION_FAILED") {
		t.Errorf("log does not name the broker and the cause:\n%s", logged)
	}
	if strings.Contains(logged, "first-password") || strings.Contains(logged, "second-password") {
		t.Errorf("log shows a password:\n%s", logged)
	}

	if err := os.WriteFile(pwFile, []byte("second-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fixed := time.Now()
	waitFor(t, 30*time.Second, func() bool { code, _ := mon.readyz(t); return code == http.StatusOK })
	t.Logf("ready again %.1fs after the password file was updated", time.Since(fixed).Seconds())
	produce := producerTo(t, b.Addr(), prefix, "acct-7")
	produce("payments", payment("pay-missing", time.Now()))
	waitFor(t, within+20*time.Second, func() bool { return mon.violations(t)["pay-missing"] == "open" })
}

// TestReplayOverSASLSSL: `monitor replay` reads a past window over SASL_SSL
// with the configuration's credentials (its admin and reader clients) and
// finds the incident's violations in it.
func TestReplayOverSASLSSL(t *testing.T) {
	b := kafkatest.SecureKafka(t)
	prefix := fmt.Sprintf("secreplay%d-", time.Now().UnixNano())
	topics := make([]string, len(sim.Topics))
	for i, tp := range sim.Topics {
		topics[i] = prefix + tp
	}
	kafkatest.CreateTopics(t, b.Addr(), 2, topics...)
	start := time.Now().Add(-3 * time.Hour).Truncate(time.Second).UTC()
	const payments = 1500
	ds, err := sim.Generate("friday-rollback", 11, sim.Options{Payments: payments, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := sim.Produce(context.Background(), cl, replaytest.Prefix(ds.Events, prefix)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	if err := os.Mkdir(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "kafka-password")
	if err := os.WriteFile(pw, []byte(b.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "monitor.yaml")
	body := secureKafkaYAML(b, prefix+"group", pw, b.CA.CertFile) + fmt.Sprintf("state_dir: %s\nrule_files: [%q]\n",
		filepath.Join(dir, "live-state"), replaytest.WriteRules(t, rulesDir, prefix))
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	span := time.Duration(payments) * 50 * time.Millisecond
	from, to := start.Add(span*3/10), start.Add(span*7/10)
	out, err := exec.Command(buildMonitor(t), "replay", "--config", cfg, "--report", filepath.Join(dir, "report"),
		"--from", from.Format(time.RFC3339Nano), "--to", to.Format(time.RFC3339Nano)).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 2) {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	rep, err := report.Load(filepath.Join(dir, "report"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Verdict == report.Pass || len(rep.Findings) == 0 {
		t.Fatalf("replay of the incident window over SASL_SSL: verdict %s, %d findings; want the incident's violations", rep.Verdict, len(rep.Findings))
	}
	t.Logf("replay over SASL_SSL: verdict %s, %d findings", rep.Verdict, len(rep.Findings))
}
