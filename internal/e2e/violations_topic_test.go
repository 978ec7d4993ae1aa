package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/kafkatest"
)

// TestViolationsTopicHoldsEachChangeOnce publishes violations to a topic,
// kills the monitor with SIGKILL as they are decided, restarts it, then
// restarts it again under a new group so it re-reads all its input: the
// topic holds exactly one record per violation and one per resolution.
func TestViolationsTopicHoldsEachChangeOnce(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	prefix := fmt.Sprintf("vtopic%d-", time.Now().UnixNano())
	kafkatest.CreateTopics(t, brokers, 2, prefix+"payments", prefix+"ledger")
	dir := t.TempDir()
	ruleFile := writeRules(t, dir, prefix)
	config := func(group string) func(string) string {
		return func(httpAddr string) string {
			return fmt.Sprintf(`kafka: {brokers: [%q], group: %s, violation_events_topic: %s, instance_id: vt}
state_dir: %s
rule_files: [%q]
http: {listen: %q}
`, brokers, prefix+group, prefix+"violations", filepath.Join(dir, "state"), ruleFile, httpAddr)
		}
	}
	mon := launchMonitor(t, dir, "first", config("first"))
	produce := producerTo(t, brokers, prefix, "acct-7")
	start := time.Now()
	for i := 1; i <= 5; i++ {
		produce("payments", payment(fmt.Sprintf("pay-%d", i), start))
	}
	waitFor(t, 40*time.Second, func() bool { return len(mon.violations(t)) == 5 })
	mon.kill() // decided and committed; maybe not yet published
	mon.start()
	produce("ledger", ledger("pay-1", time.Now()))
	produce("ledger", ledger("pay-2", time.Now()))
	waitFor(t, 30*time.Second, func() bool {
		v := mon.violations(t)
		return v["pay-1"] == "resolved" && v["pay-2"] == "resolved"
	})
	mon.kill()
	// A new group starts from the beginning of every topic: all input is read
	// again over the same state.
	second := filepath.Join(dir, "second.yaml")
	if err := os.WriteFile(second, []byte(config("second")(mon.http)), 0o644); err != nil {
		t.Fatal(err)
	}
	mon.cfg = second
	mon.start()
	// The new group reads all seven input records again, each at or below
	// the applied offset the state holds: the monitor counts each as
	// skipped. Once all seven are, anything the re-reading decided is in
	// the outbox, and a graceful stop publishes the outbox before the
	// process exits.
	waitFor(t, 60*time.Second, func() bool {
		n, err := metricSum(mon.http, "invmon_records_skipped_total")
		return err == nil && n == 7
	})
	// The API serves the new group's view of its own stream of violation
	// changes, which the re-reading left empty: it decided nothing again.
	if got := mon.violations(t); len(got) != 0 {
		t.Fatalf("after re-reading, the new group's view lists %v", got)
	}
	mon.stop()

	rd, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(prefix+"violations"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	counts := map[string]int{}
	total := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := rd.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			event := ""
			for _, h := range r.Headers {
				if h.Key == "invmon.event" {
					event = string(h.Value)
				}
			}
			key := event + " " + string(r.Key)
			if strings.Contains(string(r.Value), `"key":"pay-`) {
				counts[key]++
				total++
			}
		})
	}
	opened, resolved := 0, 0
	for k, n := range counts {
		if n != 1 {
			t.Errorf("%s published %d times", k, n)
		}
		if strings.HasPrefix(k, "opened ") {
			opened++
		} else if strings.HasPrefix(k, "resolved ") {
			resolved++
		}
	}
	if opened != 5 || resolved != 2 || total != 7 {
		t.Fatalf("violations topic: %d opened, %d resolved, %d records (%v); want 5, 2, 7", opened, resolved, total, counts)
	}
}
