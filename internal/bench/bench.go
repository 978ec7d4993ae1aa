// Package bench measures the monitor's end-to-end rate against a bare
// franz-go consumer reading the same topics on the same broker in the same
// run: the ratio of the two is the figure that travels between machines.
package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	examplerules "github.com/invmon/invmon/rules"
)

// Prepare creates the topics (prefixed, so runs never mix) and produces the
// example domain's payments and ledger events until at least events exist.
// It returns the topic names and the number of records produced.
func Prepare(ctx context.Context, brokers []string, prefix string, events int, partitions int32) (payments, ledger string, n int, err error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(10*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(200_000))
	if err != nil {
		return "", "", 0, err
	}
	defer cl.Close()
	payments, ledger = prefix+"payments", prefix+"ledger"
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopics(ctx, partitions, 1, nil, payments, ledger); err != nil {
		return "", "", 0, fmt.Errorf("create topics: %w", err)
	}
	// A payment yields about four payments and ledger events (pending,
	// authorized, captured or canceled, and a ledger entry).
	ds, err := sim.Generate("friday-rollback", 7, sim.Options{Payments: events/4 + 1, Accounts: 10_000, Rate: 500})
	if err != nil {
		return "", "", 0, err
	}
	// The absence rule reads payments and ledger; the scenario's other
	// topics are left out.
	events = 0
	kept := ds.Events[:0]
	for _, e := range ds.Events {
		switch e.Topic {
		case sim.TopicPayments:
			e.Topic = payments
		case sim.TopicLedger:
			e.Topic = ledger
		default:
			continue
		}
		kept = append(kept, e)
	}
	if err := sim.Produce(ctx, cl, kept); err != nil {
		return "", "", 0, err
	}
	return payments, ledger, len(kept), nil
}

// RawConsume reads every record of the topics with a bare franz-go consumer
// (no group, no decoding) and returns the elapsed time: the ceiling.
func RawConsume(ctx context.Context, brokers []string, want int, topics ...string) (time.Duration, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	start := time.Now()
	n := 0
	for n < want {
		fs := cl.PollRecords(ctx, 10000)
		if err := fs.Err0(); err != nil && ctx.Err() != nil {
			return 0, fmt.Errorf("raw consumer read %d of %d: %w", n, want, err)
		}
		n += fs.NumRecords()
	}
	return time.Since(start), nil
}

// Monitor runs the monitor with the absence rule on the topics until it has
// handled want records and returns the elapsed time.
func Monitor(ctx context.Context, brokers []string, payments, ledger string, want int, stateDir string) (time.Duration, error) {
	names, sources, err := examplerules.Files()
	if err != nil {
		return 0, err
	}
	// The benchmark measures the absence rule alone, on prefixed topics.
	const file = "rules/captured_payment_has_ledger_entry.yaml"
	if _, ok := sources[file]; !ok {
		return 0, fmt.Errorf("example rule %s missing among %v", file, names)
	}
	rs, err := rules.Parse([]string{file}, sources)
	if err != nil {
		return 0, err
	}
	rs.Streams["payments"].Topic = payments
	rs.Streams["ledger"].Topic = ledger
	cfg := config.Defaults()
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Group = payments + "-bench"
	cfg.StateDir = stateDir
	cfg.HTTP.Listen = ""
	m, err := monitor.New(ctx, monitor.Options{Config: cfg, Rules: rs, Logger: zap.NewNop()})
	if err != nil {
		return 0, err
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- m.Run(ctx) }()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s := m.Stats(); s.Records < int64(want) || !s.Durable; s = m.Stats() {
		select {
		case err := <-done:
			return 0, fmt.Errorf("monitor stopped early: %v", err)
		case <-t.C:
		}
	}
	elapsed := time.Since(start)
	cancel()
	<-done
	return elapsed, nil
}
