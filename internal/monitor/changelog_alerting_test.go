package monitor_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
)

// testClock is the monitors' clock in these tests: it starts 90 s before
// the wall clock and is stepped a second at a time, never past the wall
// clock, so deadlines pass in a moment while every time the monitor sends
// Alertmanager is in its past (a resolution with an endsAt ahead of
// Alertmanager's clock would still count as firing there).
type testClock struct {
	start time.Time
	ns    atomic.Int64
}

func newTestClock() *testClock {
	c := &testClock{start: time.Now().Add(-90 * time.Second).Truncate(time.Second).UTC()}
	c.ns.Store(c.start.UnixNano())
	return c
}

func (c *testClock) now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// step moves the clock a second on, unless that passes the wall clock.
func (c *testClock) step() {
	if c.now().Add(time.Second).Before(time.Now()) {
		c.ns.Add(int64(time.Second))
	}
}

func (c *testClock) at(d time.Duration) string { return c.start.Add(d).Format(time.RFC3339) }

// startMember runs one monitor of group over cluster until the test ends.
func startMember(t *testing.T, cluster *kfake.Cluster, group string, changelog bool, clk *testClock, rs *rules.RuleSet, amURLs ...string) *monitor.Monitor {
	t.Helper()
	cfg := config.Defaults()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.Kafka.Group = group
	cfg.Kafka.Changelog = changelog
	cfg.StateDir = t.TempDir()
	cfg.HTTP.Listen = ""
	cfg.Alertmanager.URLs = amURLs
	return runMonitor(t, monitor.Options{Config: cfg, Rules: rs, Now: clk.now,
		TickInterval: 50 * time.Millisecond, Logger: zap.NewNop()})
}

// waitStepping steps clk until cond holds, failing after 30 s.
func waitStepping(t *testing.T, clk *testClock, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s not seen", what)
		}
		clk.step()
		time.Sleep(20 * time.Millisecond)
	}
}

func hookHas(hook *kafkatest.WebhookReceiver, match func(kafkatest.WebhookAlert) bool) bool {
	return slices.ContainsFunc(hook.Alerts(), match)
}

// distinctAlerts lists what the webhook received, each distinct alert
// (status, labels, summary) once, in the order first received.
func distinctAlerts(hook *kafkatest.WebhookReceiver) []string {
	var out []string
	for _, a := range hook.Alerts() {
		d := fmt.Sprintf("%s %v summary=%q", a.Status, a.Labels, a.Annotations["summary"])
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// alertsWith runs one monitor with kafka.changelog set as given over a
// captured payment whose ledger entry comes late, and returns the distinct
// alerts the real Alertmanager notified: the page when the deadline passes,
// and the resolution once the entry arrives.
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
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanager(t, hook.URL())
	clk := newTestClock()
	startMember(t, cluster, "g", changelog, clk, rs, am.URL())

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
	produce("payments", `{"event_id":"e1","payment_id":"p1","account_id":"acct-1","status":"captured","amount_cents":420000,"currency":"USD","occurred_at":"`+clk.at(0)+`"}`)
	// The clock moves on while no input arrives: the idle inputs let the
	// watermark follow it past the 30 s deadline.
	status := func(s string) func(kafkatest.WebhookAlert) bool {
		return func(a kafkatest.WebhookAlert) bool { return a.Status == s }
	}
	waitStepping(t, clk, fmt.Sprintf("changelog=%v: the page", changelog), func() bool { return hookHas(hook, status("firing")) })
	produce("ledger", `{"entry_id":"l1","payment_id":"p1","account_id":"acct-1","amount_cents":420000,"direction":"credit","occurred_at":"`+clk.at(40*time.Second)+`"}`)
	waitStepping(t, clk, fmt.Sprintf("changelog=%v: the resolution", changelog), func() bool { return hookHas(hook, status("resolved")) })
	return distinctAlerts(hook)
}

// TestChangelogSettingChangesNothingAboutAlerting: alerting reads the group
// view, followed from the group's stream of violation changes, whatever
// kafka.changelog says; the pages and resolutions the real Alertmanager
// notifies are the same either way.
func TestChangelogSettingChangesNothingAboutAlerting(t *testing.T) {
	on, off := alertsWith(t, true), alertsWith(t, false)
	if strings.Join(on, "\n") != strings.Join(off, "\n") {
		t.Fatalf("alerts differ\nchangelog on:\n%s\nchangelog off:\n%s", strings.Join(on, "\n"), strings.Join(off, "\n"))
	}
	if len(on) != 2 || !strings.HasPrefix(on[0], "firing") || !strings.HasPrefix(on[1], "resolved") {
		t.Fatalf("want one page, then its resolution: %v", on)
	}
	t.Logf("alerts either way:\n%s", strings.Join(on, "\n"))
}

// TestMemberPagesOnAnotherMembersViolationWithoutChangelog: two members of
// a group, kafka.changelog off, each owning one of two partitions, and one
// violation on each partition. Only member A talks to Alertmanager; its
// page counts both violations, B's as well as its own, because it reads
// the group view, not its own state.
func TestMemberPagesOnAnotherMembersViolationWithoutChangelog(t *testing.T) {
	const rule = "captured_payment_has_ledger_entry"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "payments", "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	rs, err := rules.LoadFiles("../../rules/" + rule + ".yaml")
	if err != nil {
		t.Fatal(err)
	}
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanager(t, hook.URL())
	clk := newTestClock()
	a := startMember(t, cluster, "pair", false, clk, rs, am.URL())
	b := startMember(t, cluster, "pair", false, clk, rs)
	deadline := time.Now().Add(30 * time.Second)
	for a.Stats().Partitions != 1 || b.Stats().Partitions != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("partitions not spread: A owns %d, B %d", a.Stats().Partitions, b.Stats().Partitions)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	for p := range 2 {
		v := fmt.Sprintf(`{"event_id":"e%d","payment_id":"p%d","account_id":"acct-%d","status":"captured","amount_cents":10000,"currency":"USD","occurred_at":"%s"}`, p, p, p, clk.at(0))
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "payments", Partition: int32(p), Key: fmt.Appendf(nil, "acct-%d", p), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitStepping(t, clk, "A's page on both members' violations", func() bool {
		return hookHas(hook, func(w kafkatest.WebhookAlert) bool {
			return w.Status == "firing" && w.Labels["alertname"] == rule && w.Annotations["open_violations"] == "2"
		})
	})
	if got := a.Stats().Partitions; got != 1 {
		t.Fatalf("A owns %d partitions at the page: the test shows nothing unless B owns the other", got)
	}
}
