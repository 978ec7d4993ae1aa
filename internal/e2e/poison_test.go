package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/demo"
	"github.com/invmon/invmon/internal/kafkatest"
)

// TestPoisonRecordsOnRealBroker inserts 1% malformed records of every kind
// among a friday-rollback incident on the real broker: the dead-letter topic
// holds exactly them, with their provenance in headers, and the violations
// still equal the ground truth, so no valid record was lost or stalled.
func TestPoisonRecordsOnRealBroker(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	prefix := fmt.Sprintf("poison%d-", time.Now().UnixNano())
	res, err := demo.Run(context.Background(), demo.Options{
		Scenario: "friday-rollback", Seed: 11, Payments: 6000, Partitions: 4, Poison: 0.01,
		Brokers: kafkatest.Seeds(brokers), TopicPrefix: prefix, Timeout: 3 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	for rule, s := range res.Rules {
		if s.Missed != 0 || s.FalsePositives != 0 || s.Duplicates != 0 || s.Found != s.Injected || s.Injected == 0 {
			t.Errorf("%s: %+v", rule, s)
		}
	}
	inserted := 0
	for _, n := range res.Poisoned {
		inserted += n
	}
	if len(res.Poisoned) != 5 || inserted < 100 || res.DeadLetters != int64(inserted) {
		t.Fatalf("inserted %v (%d), dead-lettered %d", res.Poisoned, inserted, res.DeadLetters)
	}
	t.Logf("%d events, %d poisoned: %v", res.Events, inserted, res.Poisoned)

	rd, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(res.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got := map[string]int{}
	n := 0
	for deadline := time.Now().Add(20 * time.Second); n < inserted && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := rd.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			n++
			h := map[string]string{}
			for _, x := range r.Headers {
				h[x.Key] = string(x.Value)
			}
			got[h["invmon.reason"]]++
			off, err := strconv.ParseInt(h["invmon.source.offset"], 10, 64)
			if err != nil || off < 0 || h["invmon.source.topic"] == "" || h["invmon.source.partition"] == "" || h["invmon.error"] == "" {
				t.Errorf("dead letter headers %v", h)
			}
		})
	}
	// A moment more: nothing beyond the poison may arrive.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	n += rd.PollFetches(ctx).NumRecords()
	cancel()
	if n != inserted {
		t.Fatalf("dead-letter topic holds %d records, want %d", n, inserted)
	}
	for reason, want := range res.Poisoned {
		if got[reason] != want {
			t.Errorf("reason %s: %d dead letters, want %d", reason, got[reason], want)
		}
	}
}
