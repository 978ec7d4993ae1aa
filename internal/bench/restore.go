package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/consumer"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/statekey"
)

// Restore measures how long a member takes to rebuild a partition holding
// entries state entries from its changelog: it logs that many pending
// expectations (keys and values shaped like the engine's) to a one-partition
// topic, then restores them into a fresh Badger directory with the code the
// consumer runs when it gains a partition.
func Restore(ctx context.Context, brokers []string, prefix string, entries int) (time.Duration, error) {
	topic := prefix + "changelog"
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(10*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(200_000), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopics(ctx, 1, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, topic); err != nil {
		return 0, fmt.Errorf("create changelog topic: %w", err)
	}
	errc := make(chan error, 1)
	rulePrefix := statekey.RulePrefix("captured_payment_has_ledger_entry")
	for i := 0; i < entries; i++ {
		key := fmt.Sprintf("%sd/%08d%s\x00pay-%07d-captured", rulePrefix, i, fmt.Sprintf("pay-%07d", i), i)
		value := fmt.Sprintf(`{"key":"pay-%07d","event_id":"pay-%07d-captured","event_time":"2026-11-20T09:00:00Z","deadline":"2026-11-20T09:00:30Z","impact":4200.5,"customer":"acct-%04d","source":{"topic":"payments","partition":0,"offset":%d}}`, i, i, i%10000, i)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(value)}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, err
	}
	select {
	case err := <-errc:
		return 0, err
	default:
	}
	dir, err := os.MkdirTemp("", "invmon-restore-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	store, err := joinstate.Open(dir, joinstate.Options{}, nil)
	if err != nil {
		return 0, err
	}
	defer store.Close()
	start := time.Now()
	n, written, err := consumer.Restore(ctx, brokers, nil, topic, 0, int64(entries), store, []string{"payments", "ledger"}, nil)
	if err != nil {
		return 0, err
	}
	took := time.Since(start)
	if n != entries || written != entries {
		return 0, fmt.Errorf("restored %d records and %d entries, want %d", n, written, entries)
	}
	return took, nil
}
