package consumer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/violation"
)

// faultWorkload is a captured-payment workload on a real broker with a
// known answer: every fifth payment has no ledger entry.
type faultWorkload struct {
	brokers          string
	payments, ledger string
	rs               *rules.RuleSet
	truth            []string
	total            int64
}

const faultPartitions = 2

func newFaultWorkload(t *testing.T, brokers string, poison int) *faultWorkload {
	t.Helper()
	w := &faultWorkload{brokers: brokers, payments: kafkatest.Topic(t, "payments"), ledger: kafkatest.Topic(t, "ledger")}
	kafkatest.CreateTopics(t, w.brokers, faultPartitions, w.payments, w.ledger)
	src, err := os.ReadFile("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(src), "topic: payments", "topic: "+w.payments)
	text = strings.ReplaceAll(text, "topic: ledger", "topic: "+w.ledger)
	file := filepath.Join(t.TempDir(), "rule.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if w.rs, err = rules.LoadFiles(file); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	add := func(topic string, part int32, value string) {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: part, Value: []byte(value)})
	}
	for i := range 200 {
		part, at := int32(i%faultPartitions), t0.Add(time.Duration(i)*time.Second)
		id := fmt.Sprintf("pay-%03d", i)
		add(w.payments, part, fmt.Sprintf(`{"event_id":"e-%s","payment_id":"%s","account_id":"a%d","status":"captured","amount_cents":100,"occurred_at":"%s"}`, id, id, part, at.Format(time.RFC3339)))
		if i%5 == 0 {
			w.truth = append(w.truth, id)
			continue
		}
		add(w.ledger, part, fmt.Sprintf(`{"entry_id":"l-%s","payment_id":"%s","account_id":"a%d","amount_cents":100,"occurred_at":"%s"}`, id, id, part, at.Add(time.Second).Format(time.RFC3339)))
		if i == 101 {
			for j := range poison {
				add(w.payments, int32(j%faultPartitions), `{"event_id":`)
			}
		}
	}
	// Both streams move an hour on, on every partition: every deadline above
	// is judged.
	for part := range int32(faultPartitions) {
		at := t0.Add(time.Hour).Format(time.RFC3339)
		add(w.payments, part, fmt.Sprintf(`{"event_id":"close-%d","payment_id":"close-%d","account_id":"a","status":"authorized","amount_cents":1,"occurred_at":"%s"}`, part, part, at))
		add(w.ledger, part, fmt.Sprintf(`{"entry_id":"lclose-%d","payment_id":"close-%d","account_id":"a","amount_cents":1,"occurred_at":"%s"}`, part, part, at))
	}
	w.total = int64(len(recs))
	produce(t, kafkatest.Seeds(w.brokers), recs...)
	return w
}

// committedWithinDurable fails the test when the group committed an offset
// past what the state says is applied.
func (w *faultWorkload) committedWithinDurable(t *testing.T, group string, store *joinstate.Store) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkatest.Seeds(w.brokers)...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{w.payments, w.ledger} {
		for part := range int32(faultPartitions) {
			applied, err := store.AppliedOffset(topic, part)
			if err != nil {
				t.Fatal(err)
			}
			if o, ok := offs.Lookup(topic, part); ok && o.At > applied+1 {
				t.Errorf("%s[%d]: committed offset %d is past the durable state (applied %d)", topic, part, o.At, applied)
			}
		}
	}
}

// matchesTruth runs a fresh consumer on the state until it has read
// everything and compares the open violations with the workload's answer.
func (w *faultWorkload) matchesTruth(t *testing.T, cfg Config, store *joinstate.Store) {
	t.Helper()
	c, err := New(context.Background(), cfg, w.rs, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, c, func(s Stats) bool {
		return s.CaughtUp && s.Durable && s.Pending == 0 && s.Partitions == faultPartitions
	})
	c.Close()
	vs, err := store.Violations(joinstate.Filter{State: violation.Open})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vs {
		got = append(got, v.Key)
	}
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(w.truth) {
		t.Fatalf("after the fault and a restart, open violations\n got  %v\n want %v", got, w.truth)
	}
}

// runToFailure runs c until Run returns, which must be with an error, and
// closes it.
func runToFailure(t *testing.T, c *Consumer, within time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		c.Close()
		if err == nil {
			t.Fatal("Run returned without an error after the fault")
		}
		return err
	case <-time.After(within):
		t.Fatalf("Run did not stop within %s of the fault; stats %+v", within, c.Stats())
		return nil
	}
}

// TestFailedStateCommitCommitsNoOffsetAndRestartMatchesTruth: the Badger
// commit of the fourth batch fails on the real broker. The consumer stops
// with the error, and neither the failure nor closing (which revokes the
// partitions) commits an offset past the durable state; restarted without
// the fault, it finds exactly the workload's violations.
func TestFailedStateCommitCommitsNoOffsetAndRestartMatchesTruth(t *testing.T) {
	w := newFaultWorkload(t, kafkatest.Kafka(t), 0)
	store := openStore(t)
	cfg := Config{Brokers: kafkatest.Seeds(w.brokers), Group: kafkatest.Topic(t, "g"), TickInterval: 50 * time.Millisecond, MaxPollRecords: 25}
	c, err := New(context.Background(), cfg, w.rs, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var commits atomic.Int64
	injected := errors.New("injected: state commit failed (disk full)")
	c.beforeStateCommit = func() error {
		if commits.Add(1) == 4 {
			return injected
		}
		return nil
	}
	if err := runToFailure(t, c, 60*time.Second); !errors.Is(err, injected) {
		t.Fatalf("Run returned %v, want the injected fault", err)
	}
	if s := c.Stats(); s.Records >= w.total {
		t.Fatalf("the fault came after every record was read (%d of %d): it tests nothing", s.Records, w.total)
	}
	w.committedWithinDurable(t, cfg.Group, store)
	w.matchesTruth(t, cfg, store)
	w.committedWithinDurable(t, cfg.Group, store)
}

// TestDeadLetterThatCannotBeProducedStopsWithoutCommitting: the broker (a
// real one of this test's own) stops just as a batch holding dead letters is
// produced, so they can never be acknowledged. The consumer gives up after
// ProduceTimeout instead of blocking forever, reports not ready, counts the
// failure, and commits nothing past the durable state; once the broker is
// back, a restart finds the workload's violations and every dead letter.
func TestDeadLetterThatCannotBeProducedStopsWithoutCommitting(t *testing.T) {
	const poison = 6
	broker := kafkatest.StartKafka(t)
	w := newFaultWorkload(t, broker.Addr(), poison)
	group := kafkatest.Topic(t, "g")
	ctx := context.Background()
	store := openStore(t)
	reg := prometheus.NewRegistry()
	cfg := Config{Brokers: kafkatest.Seeds(w.brokers), Group: group, TickInterval: 50 * time.Millisecond,
		MaxPollRecords: 25, ProduceTimeout: 6 * time.Second, Registerer: reg,
		// The member cannot leave the group while the broker is down: a short
		// session lets the restarted one take the partitions over soon.
		Opts: []kgo.Opt{kgo.SessionTimeout(3 * time.Second)}}
	c, err := New(ctx, cfg, w.rs, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var stopped atomic.Bool
	c.beforeProduce = func(out []*kgo.Record) {
		for _, r := range out {
			if r.Topic == c.cfg.DLQTopic && stopped.CompareAndSwap(false, true) {
				broker.Stop()
				return
			}
		}
	}
	var sawUnready atomic.Bool
	watch := make(chan struct{})
	go func() {
		defer close(watch)
		for !stopped.Load() || c.produceSince.Load() != 0 || c.commitErr.Load() == nil {
			if stopped.Load() && c.produceStalled() && !c.Ready() {
				sawUnready.Store(true)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	err = runToFailure(t, c, 90*time.Second)
	<-watch
	if !strings.Contains(err.Error(), "not acknowledged within 6s") {
		t.Fatalf("Run returned %v, want the produce bound", err)
	}
	if !sawUnready.Load() || c.Ready() {
		t.Errorf("readiness while the produce waited: saw not ready %v; ready after the failure %v", sawUnready.Load(), c.Ready())
	}
	if n := testutil.ToFloat64(c.produceFailures); n != 1 {
		t.Errorf("invmon_state_produce_failures_total = %v, want 1", n)
	}

	// The fault is removed: the broker is back.
	broker.Start()
	w.committedWithinDurable(t, group, store)
	cfg.Registerer = nil
	w.matchesTruth(t, cfg, store)
	w.committedWithinDurable(t, group, store)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkatest.Seeds(w.brokers)...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, c.cfg.DLQTopic)
	if err != nil {
		t.Fatal(err)
	}
	if end, _ := ends.Lookup(c.cfg.DLQTopic, 0); end.Offset < poison {
		t.Fatalf("dead-letter topic holds %d records, want at least %d", end.Offset, poison)
	}
}

// TestOversizedDeadLetterIsTruncatedToTheTopicLimit: an input topic on the
// real broker accepts 2 MB records, the dead-letter topic only 64 KB. Each
// oversized record becomes a dead letter cut to fit, with headers saying so
// and giving the original size, and the partition keeps going.
func TestOversizedDeadLetterIsTruncatedToTheTopicLimit(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	w := &faultWorkload{brokers: brokers, payments: kafkatest.Topic(t, "payments"), ledger: kafkatest.Topic(t, "ledger")}
	group := kafkatest.Topic(t, "g")
	dlq := group + "-dlq"
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkatest.Seeds(brokers)...), kgo.ProducerBatchMaxBytes(4<<20), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	for topic, limit := range map[string]string{w.payments: "3000000", w.ledger: "3000000", dlq: "65536"} {
		if resp, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"max.message.bytes": kadm.StringPtr(limit)}, topic); err != nil || resp.Err != nil {
			t.Fatal(err, resp.Err)
		}
	}
	src, err := os.ReadFile("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(src), "topic: payments", "topic: "+w.payments)
	text = strings.ReplaceAll(text, "topic: ledger", "topic: "+w.ledger)
	file := filepath.Join(t.TempDir(), "rule.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if w.rs, err = rules.LoadFiles(file); err != nil {
		t.Fatal(err)
	}
	sizes := []int{2_000_000, 300_000}
	var recs []*kgo.Record
	for _, n := range sizes {
		recs = append(recs, &kgo.Record{Topic: w.payments, Key: []byte("k"), Value: []byte(`{"pad":"` + strings.Repeat("x", n-10) + `"}`)})
	}
	good := `{"event_id":"e1","payment_id":"p1","account_id":"a1","status":"authorized","amount_cents":1,"occurred_at":"2026-11-20T09:00:00Z"}`
	recs = append(recs, &kgo.Record{Topic: w.payments, Value: []byte(good)})
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	store := openStore(t)
	c, err := New(ctx, Config{Brokers: kafkatest.Seeds(brokers), Group: group, DLQTopic: dlq, TickInterval: 50 * time.Millisecond}, w.rs, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, c, func(s Stats) bool { return s.Records == 3 && s.CaughtUp && s.Durable })
	c.Close()
	if off, _ := store.AppliedOffset(w.payments, 0); off != 2 {
		t.Fatalf("applied offset %d, want 2: the partition did not get past the oversized records", off)
	}
	rd, err := kgo.NewClient(kgo.SeedBrokers(kafkatest.Seeds(brokers)...), kgo.ConsumeTopics(dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var got []*kgo.Record
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for len(got) < len(sizes) {
		fs := rd.PollFetches(pctx)
		if pctx.Err() != nil {
			t.Fatalf("dead letters: got %d, want %d", len(got), len(sizes))
		}
		got = append(got, fs.Records()...)
	}
	for i, r := range got {
		h := map[string]string{}
		for _, kv := range r.Headers {
			h[kv.Key] = string(kv.Value)
		}
		if h["invmon.reason"] != "oversized" || h["invmon.truncated"] != "true" || h["invmon.original.value.size"] != fmt.Sprint(len(recs[i].Value)) {
			t.Errorf("dead letter %d headers %v: want reason oversized, truncated, original size %d", i, h, len(recs[i].Value))
		}
		if len(r.Value) >= 65536 || len(r.Value) < 60000 || string(r.Value) != string(recs[i].Value[:len(r.Value)]) {
			t.Errorf("dead letter %d value: %d bytes, want a prefix of the record just under the 64 KiB limit", i, len(r.Value))
		}
	}
}

// appliedOffsets reads what the state says is applied, per topic-partition.
func (w *faultWorkload) appliedOffsets(t *testing.T, store *joinstate.Store) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, topic := range []string{w.payments, w.ledger} {
		for part := range int32(faultPartitions) {
			off, err := store.AppliedOffset(topic, part)
			if err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprintf("%s[%d]", topic, part)] = off
		}
	}
	return out
}

// TestNextBatchIsProducedDuringStateCommitAndNotMadeDurableAfterItFails: on
// the real broker, with the changelog on (so every batch produces), the third
// batch's Badger commit waits until the fourth batch's records have been
// produced, which only a pipeline that overlaps them does, and then fails.
// Nothing of the fourth batch may become durable though its records were
// acknowledged: the applied offsets stay where the second batch left them,
// no offset is committed past them, and a restart (which restores from the
// changelog the fourth batch reached) finds exactly the workload's
// violations.
func TestNextBatchIsProducedDuringStateCommitAndNotMadeDurableAfterItFails(t *testing.T) {
	w := newFaultWorkload(t, kafkatest.Kafka(t), 0)
	store := openStore(t)
	cfg := Config{Brokers: kafkatest.Seeds(w.brokers), Group: kafkatest.Topic(t, "g"), TickInterval: 50 * time.Millisecond,
		MaxPollRecords: 25, Changelog: true}
	c, err := New(context.Background(), cfg, w.rs, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// With the changelog every batch has records to produce, so the n-th
	// produce and the n-th state commit are the same batch's.
	var produced, commits atomic.Int64
	fourthProduced := make(chan struct{})
	c.beforeProduce = func([]*kgo.Record) {
		if produced.Add(1) == 4 {
			close(fourthProduced)
		}
	}
	injected := errors.New("injected: state commit failed (disk full)")
	var before map[string]int64
	c.beforeStateCommit = func() error {
		if commits.Add(1) != 3 {
			return nil
		}
		select {
		case <-fourthProduced:
		case <-time.After(20 * time.Second):
			return errors.New("the fourth batch was not produced while the third was committed to Badger")
		}
		before = w.appliedOffsets(t, store)
		return injected
	}
	if err := runToFailure(t, c, 60*time.Second); !errors.Is(err, injected) {
		t.Fatalf("Run returned %v, want the injected fault", err)
	}
	if s := c.Stats(); s.Records >= w.total {
		t.Fatalf("the fault came after every record was read (%d of %d): it tests nothing", s.Records, w.total)
	}
	if after := w.appliedOffsets(t, store); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a batch after the failed one became durable: applied offsets %v when the third batch failed, %v after", before, after)
	}
	w.committedWithinDurable(t, cfg.Group, store)
	w.matchesTruth(t, cfg, store)
	w.committedWithinDurable(t, cfg.Group, store)
}
