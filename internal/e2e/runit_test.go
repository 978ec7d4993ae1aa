package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/quantity"
	"github.com/invmon/invmon/internal/server"
)

// TestRunItAsTheREADMESays follows the README's "Run it" on a fresh broker
// of its own (nothing on it but what the steps create) and a real
// Alertmanager: monitor topics create and check, monitor run with the
// shipped deploy/monitor.yaml as a static member, monitor simulate, and then
// a page of the console that shows what the API shows.
func TestRunItAsTheREADMESays(t *testing.T) {
	broker := kafkatest.StartKafka(t)
	brokers := broker.Addr()
	am := kafkatest.StartAlertmanager(t, kafkatest.NewWebhookReceiver(t).URL())
	bin := buildMonitor(t)
	dir := t.TempDir()
	monitor := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = "../.." // the README's commands run at the repository's root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("monitor %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	out := monitor("topics", "create", "--brokers", brokers, "--rule-files", "rules/*.yaml", "--partitions", "4")
	for _, want := range []string{"created  accounts         4 partitions, compacted", "created  payments         4 partitions",
		"co-partitioned: every rule's topics have equal partition counts"} {
		if !strings.Contains(out, want) {
			t.Errorf("topics create printed no %q:\n%s", want, out)
		}
	}
	out = monitor("topics", "check", "--brokers", brokers, "--rule-files", "rules/*.yaml")
	if !strings.Contains(out, "co-partitioned: every rule's topics have equal partition counts") {
		t.Errorf("topics check:\n%s", out)
	}

	addr := fmt.Sprintf("127.0.0.1:%d", kafkatest.FreePort(t))
	logf, err := os.Create(filepath.Join(dir, "monitor.log"))
	if err != nil {
		t.Fatal(err)
	}
	run := exec.Command(bin, "run", "--config", "deploy/monitor.yaml",
		"--kafka.brokers", brokers, "--kafka.instance-id", "invmon-0", "--alertmanager.url", am.URL(),
		"--rule-files", "rules/*.yaml", "--state-dir", filepath.Join(dir, "state"), "--http.listen", addr)
	run.Dir = "../.."
	run.Env = append(os.Environ(), "KAFKA_SASL_PASSWORD=")
	run.Stdout, run.Stderr = logf, logf
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	defer func() {
		_ = run.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = run.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "monitor.log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("monitor log (tail):\n%s", b)
		}
	}()
	monitor("simulate", "--brokers", brokers, "--scenario", "friday-rollback", "--payments", "1500", "--truth", filepath.Join(dir, "truth.json"))
	var truth struct {
		Violations []json.RawMessage `json:"violations"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "truth.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &truth); err != nil {
		t.Fatal(err)
	}

	// The console shows the incident: wait until the open count settles
	// (deadlines of 30 s, idle inputs after 10 s), as a reader would.
	base := "http://" + addr
	openTotal := regexp.MustCompile(`id="open-total">([0-9,]+)<`)
	last, stableSince := "", time.Now()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		select {
		case err := <-exited:
			t.Fatalf("monitor run exited: %v", err)
		default:
		}
		var m []string
		if resp, err := httpClient.Get(base + "/"); err == nil { // not listening yet while it starts
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			m = openTotal.FindStringSubmatch(string(b))
		}
		if m != nil && m[1] != last {
			last, stableSince = m[1], time.Now()
		}
		if m != nil && m[1] != "0" && time.Since(stableSince) > 15*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the console's open count never settled above 0 (last %q)", last)
		}
		time.Sleep(time.Second)
	}
	open, err := server.FetchViolations(context.Background(), httpClient, base, url.Values{"state": {"open"}})
	if err != nil {
		t.Fatal(err)
	}
	if last != quantity.Int(len(open)) {
		t.Errorf("the console shows %s open violations, the API %d", last, len(open))
	}
	rulePage := get(t, base+"/rules/captured_payment_has_ledger_entry")
	if !strings.Contains(rulePage, "name: captured_payment_has_ledger_entry") || !strings.Contains(rulePage, `id="violations"`) {
		t.Errorf("the rule's page has no definition or no violations")
	}
	t.Logf("README Run it: topics created and checked, the incident simulated (%d violations injected); the console shows %s open violations, the API %d",
		len(truth.Violations), last, len(open))
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}
