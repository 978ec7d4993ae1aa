package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/kafkatest"
)

// TestGroupPagesAsOne runs two members of one group, each owning one of two
// partitions, and puts violations on both partitions: the alert Alertmanager
// holds counts all of them, whichever member sent it, and both members'
// APIs list all of them (their group views agree).
func TestGroupPagesAsOne(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	prefix := fmt.Sprintf("group%d-", time.Now().UnixNano())
	kafkatest.CreateTopics(t, brokers, 2, prefix+"payments", prefix+"ledger")
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanager(t, hook.URL())
	dir := t.TempDir()
	ruleFile := writeRules(t, dir, prefix)
	var members []*monitorProc
	for i := 0; i < 2; i++ {
		members = append(members, launchMonitor(t, dir, fmt.Sprintf("m%d", i), func(httpAddr string) string {
			return fmt.Sprintf(`kafka: {brokers: [%q], group: %s, instance_id: m%d}
state_dir: %s
rule_files: [%q]
http: {listen: %q}
alertmanager: {urls: [%q], resend_interval: 2s}
`, brokers, prefix+"group", i, filepath.Join(dir, fmt.Sprintf("state%d", i)), ruleFile, httpAddr, am.URL())
		}))
	}
	// Wait until each member owns one partition.
	waitFor(t, 60*time.Second, func() bool {
		for _, m := range members {
			if owned(t, m) != 1 {
				return false
			}
		}
		return true
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	now := time.Now()
	for i := 0; i < 4; i++ {
		r := &kgo.Record{Topic: prefix + "payments", Partition: int32(i % 2), Key: []byte("acct"), Value: []byte(payment(fmt.Sprintf("pay-%d", i), now))}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// Each member evaluates its own partition, and each serves the whole
	// group's violations from its group view.
	waitFor(t, 40*time.Second, func() bool { return len(members[0].violations(t)) == 4 && len(members[1].violations(t)) == 4 })
	// The alert counts all four, stably: both members send the same one.
	hook.WaitFor(t, 30*time.Second, func(a kafkatest.WebhookAlert) bool {
		return a.Status == "firing" && a.Labels["alertname"] == rule && a.Annotations["open_violations"] == "4"
	})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		a := activeAlerts(t, am.URL())
		for key, alert := range a {
			if alert.Labels["alertname"] == rule && key != rule+"/"+alert.Labels["severity"] {
				t.Fatalf("unexpected alert %s", key)
			}
		}
		if len(a) != 1 {
			t.Fatalf("Alertmanager holds %d alerts, want one for the group: %v", len(a), a)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// owned returns how many partition numbers a member evaluates, from its
// invmon_owned_partitions metric.
func owned(t *testing.T, m *monitorProc) int {
	t.Helper()
	resp, err := http.Get("http://" + m.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "invmon_owned_partitions "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}
