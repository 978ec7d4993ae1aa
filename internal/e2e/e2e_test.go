// Package e2e tests the monitor binary end to end against a real Apache Kafka
// broker and a real Alertmanager started by internal/kafkatest.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/server"
)

func TestMain(m *testing.M) {
	code := kafkatest.Wrap(m).Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

const rule = "captured_payment_has_ledger_entry"

// Short windows keep the test fast; the semantics are the example rule's.
const (
	within    = 6 * time.Second
	lateness  = 1 * time.Second
	idleAfter = 2 * time.Second
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// buildMonitor compiles the monitor binary once per test binary.
func buildMonitor(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "invmon-e2e-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "monitor")
		if out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/monitor").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// producerTo returns a function that produces a value, keyed by key, to
// prefix+topic and waits for the acknowledgement; the client closes at
// cleanup.
func producerTo(t *testing.T, brokers, prefix, key string) func(topic, value string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return func(topic, value string) {
		t.Helper()
		r := &kgo.Record{Topic: prefix + topic, Key: []byte(key), Value: []byte(value)}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// launchMonitor starts the monitor binary with the configuration config
// returns for a free HTTP address, waits until it is ready, and stops it
// when the test ends, logging its output if the test failed.
func launchMonitor(t *testing.T, dir, name string, config func(httpAddr string) string) *monitorProc {
	t.Helper()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", kafkatest.FreePort(t))
	cfg := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfg, []byte(config(httpAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	m := &monitorProc{t: t, bin: buildMonitor(t), cfg: cfg, http: httpAddr, log: logf}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, m.logTail())
		}
		m.stop()
		logf.Close()
	})
	m.start()
	return m
}

// writeRules writes the example rule with the test's topics and windows.
func writeRules(t *testing.T, dir, prefix string) string {
	t.Helper()
	b, err := os.ReadFile("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for old, repl := range map[string]string{
		"topic: payments":      "topic: " + prefix + "payments",
		"topic: ledger":        "topic: " + prefix + "ledger",
		"within: 30s":          fmt.Sprintf("within: %s", within),
		"allowed_lateness: 5s": fmt.Sprintf("allowed_lateness: %s", lateness),
		"idle_after: 10s":      fmt.Sprintf("idle_after: %s", idleAfter),
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("example rule no longer contains %q", old)
		}
		s = strings.ReplaceAll(s, old, repl)
	}
	p := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type monitorProc struct {
	t    *testing.T
	bin  string
	cfg  string
	http string
	cmd  *exec.Cmd
	log  *os.File
}

func (m *monitorProc) start() {
	m.t.Helper()
	m.cmd = exec.Command(m.bin, "run", "--config", m.cfg, "--log-level", "info")
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + m.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.t.Fatalf("monitor not ready; log:\n%s", m.logTail())
}

func (m *monitorProc) kill() {
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	_ = m.cmd.Wait()
}

func (m *monitorProc) stop() {
	if m.cmd == nil || m.cmd.ProcessState != nil {
		return // never started, or already waited for
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	_ = m.cmd.Wait()
}

func (m *monitorProc) logTail() string {
	b, _ := os.ReadFile(m.log.Name())
	// A crash's cause is at the start of its dump, which the tail of a long
	// goroutine dump would cut off: show it first.
	var head string
	for _, mark := range []string{"\npanic: ", "\nfatal error: ", "\nSIGQUIT", "\nSIGSEGV", "\nSIGBUS", "\nSIGABRT"} {
		if i := bytes.Index(b, []byte(mark)); i >= 0 && len(b)-i > 4000 {
			head = string(b[i:min(len(b), i+3000)]) + "\n[...]\n"
			break
		}
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return head + string(b)
}

func (m *monitorProc) violations(t *testing.T) map[string]string {
	t.Helper()
	return m.violationsFor(t, rule)
}

func (m *monitorProc) violationsFor(t *testing.T, rule string) map[string]string {
	t.Helper()
	list, err := server.FetchViolations(context.Background(), nil, "http://"+m.http, url.Values{"rule": {rule}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, v := range list {
		if _, dup := out[v.Key]; dup {
			t.Errorf("violation for %s listed twice", v.Key)
		}
		out[v.Key] = string(v.State)
	}
	return out
}

func payment(id string, at time.Time) string {
	return fmt.Sprintf(`{"event_id":"%s-captured","idempotency_key":"idem-%s","payment_id":"%s","account_id":"acct-7","status":"captured","amount_cents":420000,"currency":"USD","occurred_at":"%s"}`,
		id, id, id, at.UTC().Format(time.RFC3339Nano))
}

func ledger(id string, at time.Time) string {
	return fmt.Sprintf(`{"entry_id":"le-%s","idempotency_key":"idem-%s","payment_id":"%s","account_id":"acct-7","amount_cents":420000,"direction":"credit","occurred_at":"%s"}`,
		id, id, id, at.UTC().Format(time.RFC3339Nano))
}

// TestCapturedPaymentWithoutLedgerEntryPagesAndResolves is the walking
// skeleton's acceptance test: real broker, real Alertmanager, producers
// written in Go (franz-go) and in C (kcat), a SIGKILL mid-stream.
func TestCapturedPaymentWithoutLedgerEntryPagesAndResolves(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	prefix := fmt.Sprintf("e2e%d-", time.Now().UnixNano())
	kafkatest.CreateTopics(t, brokers, 2, prefix+"payments", prefix+"ledger")
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanager(t, hook.URL())

	dir := t.TempDir()
	ruleFile := writeRules(t, dir, prefix)
	mon := launchMonitor(t, dir, "monitor", func(httpAddr string) string {
		return fmt.Sprintf(`kafka:
  brokers: [%q]
  group: %s
  instance_id: e2e-member
state_dir: %s
rule_files: [%q]
http:
  listen: %q
  external_url: "http://%s"
alertmanager:
  urls: [%q]
  resend_interval: 2s
`, brokers, prefix+"group", filepath.Join(dir, "state"), ruleFile, httpAddr, httpAddr, am.URL())
	})

	produce := producerTo(t, brokers, prefix, "acct-7")

	start := time.Now()
	// Inside the window, from franz-go: must produce nothing.
	produce("payments", payment("pay-ok", start))
	produce("ledger", ledger("pay-ok", start.Add(time.Second)))
	// Inside the window, from kcat: must produce nothing either.
	kafkatest.KcatProduce(t, brokers, prefix+"payments", []kafkatest.KeyValue{{Key: "acct-7", Value: payment("pay-kcat-ok", start)}})
	kafkatest.KcatProduce(t, brokers, prefix+"ledger", []kafkatest.KeyValue{{Key: "acct-7", Value: ledger("pay-kcat-ok", start.Add(2*time.Second))}})
	// No ledger entry, from kcat: must page.
	kafkatest.KcatProduce(t, brokers, prefix+"payments", []kafkatest.KeyValue{{Key: "acct-7", Value: payment("pay-missing", start)}})

	deadline := start.Add(within)
	firing := hook.WaitFor(t, time.Until(deadline.Add(10*time.Second)), func(a kafkatest.WebhookAlert) bool {
		return a.Status == "firing" && a.Labels["alertname"] == rule
	})
	t.Logf("firing alert reached the webhook %.1fs after the deadline", time.Since(deadline).Seconds())
	if firing.Labels["team"] != "payments" || firing.Labels["severity"] == "" {
		t.Errorf("alert labels %v: want the rule's team label and a severity", firing.Labels)
	}
	if !strings.Contains(firing.Annotations["runbook_url"], "captured-payment-has-ledger-entry") || firing.Annotations["summary"] == "" {
		t.Errorf("alert annotations %v: want the rule's runbook_url and a summary", firing.Annotations)
	}
	if got := mon.violations(t); len(got) != 1 || got["pay-missing"] != "open" {
		t.Fatalf("violations %v: want only pay-missing open", got)
	}

	// A pending expectation is applied, then the monitor dies hard before its
	// deadline. After a restart the expectation must still fire.
	// The kill comes once the group's committed offset covers that payment:
	// the monitor commits only after the state is synced, so the restarted
	// monitor does not read it again and must find the expectation in its
	// state directory (the restore path), not re-derive it from Kafka.
	produce("payments", payment("pay-pending", time.Now()))
	waitFor(t, 20*time.Second, func() bool { return committedThrough(t, brokers, prefix+"group", prefix+"payments") })
	mon.kill()
	mon.start()
	waitFor(t, 30*time.Second, func() bool { return mon.violations(t)["pay-pending"] == "open" })
	// It came from the state directory: the restarted monitor applied no
	// event (it resumes after the applied offsets), so nothing was
	// re-derived from Kafka.
	if n, err := metricSum(mon.http, "invmon_events_consumed_total"); err != nil || n != 0 {
		t.Fatalf("the restarted monitor applied %v events (%v); want 0: its state should have held them", n, err)
	}

	// Late ledger entries resolve both; the alert resolves once none is open.
	produce("ledger", ledger("pay-missing", time.Now()))
	kafkatest.KcatProduce(t, brokers, prefix+"ledger", []kafkatest.KeyValue{{Key: "acct-7", Value: ledger("pay-pending", time.Now())}})
	waitFor(t, 20*time.Second, func() bool {
		v := mon.violations(t)
		return v["pay-missing"] == "resolved" && v["pay-pending"] == "resolved"
	})
	hook.WaitFor(t, 30*time.Second, func(a kafkatest.WebhookAlert) bool {
		return a.Status == "resolved" && a.Labels["alertname"] == rule
	})
	if got := mon.violations(t); len(got) != 2 {
		t.Fatalf("violations %v: want exactly pay-missing and pay-pending", got)
	}
}

// committedThrough reports whether group's committed offset on every
// partition of topics is at the partition's end: every record in them is
// applied and durable.
func committedThrough(t *testing.T, brokers, group string, topics ...string) bool {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	through := true
	ends.Each(func(end kadm.ListedOffset) {
		if end.Err != nil {
			t.Fatalf("end offset %s[%d]: %v", end.Topic, end.Partition, end.Err)
		}
		if end.Offset == 0 {
			return
		}
		c, ok := committed.Lookup(end.Topic, end.Partition)
		if !ok || c.Err != nil || c.At < end.Offset {
			through = false
		}
	})
	return through
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
