package consumer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/rules"
)

func fakeCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "payments", "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// exampleRule loads the captured-payment rule.
func exampleRule(t *testing.T) *rules.RuleSet {
	t.Helper()
	rs, err := rules.LoadFiles("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// openStore opens state in a temporary directory, closed at cleanup.
func openStore(t *testing.T) *joinstate.Store {
	t.Helper()
	store, err := joinstate.Open(t.TempDir(), joinstate.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func produce(t *testing.T, brokers []string, recs ...*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func runUntil(t *testing.T, c *Consumer, cond func(Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for !cond(c.Stats()) {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("condition not reached; stats %+v", c.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPoisonRecordsGoToDeadLetterTopicAndOffsetsFollowState checks that bad
// records are dead-lettered with their provenance, good ones are applied,
// and the group's committed offsets match what the state says is applied.
func TestPoisonRecordsGoToDeadLetterTopicAndOffsetsFollowState(t *testing.T) {
	brokers := fakeCluster(t)
	rs := exampleRule(t)
	store := openStore(t)
	good := `{"event_id":"e1","payment_id":"p1","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"2026-11-20T09:00:00Z"}`
	produce(t, brokers,
		&kgo.Record{Topic: "payments", Partition: 0, Value: []byte(good)},
		&kgo.Record{Topic: "payments", Partition: 0, Value: []byte(`{"event_id":`)},
		&kgo.Record{Topic: "payments", Partition: 0, Value: []byte(`{"payment_id":"p2","status":"captured","occurred_at":"2026-11-20T09:00:00Z"}`)},
	)
	c, err := New(context.Background(), Config{Brokers: brokers, Group: "g1", TickInterval: 50 * time.Millisecond}, rs, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, c, func(s Stats) bool { return s.Records == 3 && s.CaughtUp })
	if s := c.Stats(); s.DeadLetters != 2 || s.Pending != 1 {
		t.Fatalf("stats %+v: want 2 dead letters and 1 pending expectation", s)
	}
	c.Close()

	if off, _ := store.AppliedOffset("payments", 0); off != 2 {
		t.Fatalf("applied offset %d, want 2", off)
	}
	adm, _ := kgo.NewClient(kgo.SeedBrokers(brokers...))
	defer adm.Close()
	offs, err := kadm.NewClient(adm).FetchOffsets(context.Background(), "g1")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup("payments", 0); !ok || o.At != 3 {
		t.Fatalf("committed offset %+v, want 3", o)
	}

	dlq, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("g1.dlq"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.Close()
	var got []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(got) < 2 && ctx.Err() == nil {
		got = append(got, dlq.PollFetches(ctx).Records()...)
	}
	if len(got) != 2 {
		t.Fatalf("dead letters: %d, want 2", len(got))
	}
	wantReasons := []string{"malformed_json", "bad_id"}
	for i, r := range got {
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		if h["invmon.reason"] != wantReasons[i] || h["invmon.source.topic"] != "payments" || h["invmon.source.offset"] != []string{"1", "2"}[i] || h["invmon.error"] == "" {
			t.Errorf("dead letter %d headers: %v", i, h)
		}
	}
}

// TestRestartSkipsAppliedRecords reopens the consumer over the same state
// after the group's offsets were lost: records at or below the applied
// offset must not be applied again. A redelivered trigger would leave the
// state as it is (the engine drops a known event id), so the input also
// holds a malformed record: applied again, it would be dead-lettered again.
func TestRestartSkipsAppliedRecords(t *testing.T) {
	brokers := fakeCluster(t)
	rs := exampleRule(t)
	store := openStore(t)
	produce(t, brokers,
		&kgo.Record{Topic: "payments", Value: []byte(`{"event_id":"e1","payment_id":"p1","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"2026-11-20T09:00:00Z"}`)},
		&kgo.Record{Topic: "payments", Value: []byte(`{"event_id":`)})
	for i, group := range []string{"first", "second"} {
		c, err := New(context.Background(), Config{Brokers: brokers, Group: group, TickInterval: 50 * time.Millisecond}, rs, store, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		runUntil(t, c, func(s Stats) bool { return s.Records == 2 && s.CaughtUp })
		wantDLQ := int64(1 - i) // the first run dead-letters it; the second skips it
		if s := c.Stats(); s.Pending != 1 || s.DeadLetters != wantDLQ {
			t.Fatalf("run %d: pending %d, dead letters %d; want 1 and %d (each record applied once)", i, s.Pending, s.DeadLetters, wantDLQ)
		}
		if n := testutil.ToFloat64(c.skipped.WithLabelValues("payments")); n != float64(2*i) {
			t.Fatalf("run %d: %v records counted as skipped, want %d", i, n, 2*i)
		}
		c.Close()
		if off, _ := store.AppliedOffset("payments", 0); off != 1 {
			t.Fatalf("run %d: applied offset %d, want 1", i, off)
		}
	}
}

func TestCoPartitioningIsChecked(t *testing.T) {
	rs, err := rules.LoadFiles("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	details := kadm.TopicDetails{
		"payments": {Topic: "payments", Partitions: kadm.PartitionDetails{0: {}, 1: {}, 2: {}}},
		"ledger":   {Topic: "ledger", Partitions: kadm.PartitionDetails{0: {}, 1: {}}},
	}
	err = CheckCoPartitioned(rs, details)
	if err == nil || !strings.Contains(err.Error(), "ledger has 2, payments has 3") {
		t.Fatalf("got %v", err)
	}
}

// TestStateMovesWithThePartitionThroughTheChangelog runs one member, then a
// second member of the same group with an empty state directory: it must
// restore the first member's pending expectation from the changelog and
// skip the records the first one applied.
func TestStateMovesWithThePartitionThroughTheChangelog(t *testing.T) {
	brokers := fakeCluster(t)
	rs, err := rules.LoadFiles("../../rules/captured_payment_has_ledger_entry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	produce(t, brokers,
		&kgo.Record{Topic: "payments", Partition: 1, Value: []byte(`{"event_id":"e1","payment_id":"p1","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"2026-11-20T09:00:00Z"}`)},
		&kgo.Record{Topic: "payments", Partition: 1, Value: []byte(`{"event_id":"e2","payment_id":"p2","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"2026-11-20T09:00:01Z"}`)},
	)
	cfg := Config{Brokers: brokers, Group: "moving", TickInterval: 50 * time.Millisecond, Changelog: true}
	for i := 0; i < 2; i++ {
		store, err := joinstate.Open(t.TempDir(), joinstate.Options{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(context.Background(), cfg, rs, store, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		runUntil(t, c, func(s Stats) bool { return s.CaughtUp && s.Partitions == 2 && s.Pending == 2 })
		c.Close()
		if off, _ := store.AppliedOffset("payments", 1); off != 1 {
			t.Fatalf("member %d: applied offset %d, want 1", i, off)
		}
		if i == 1 {
			// The group's committed offsets let the second member read
			// nothing: its two expectations came from the changelog.
			if got := testutil.ToFloat64(c.restored); got == 0 || c.Stats().Records != 0 {
				t.Fatalf("second member restored %v records and read %d: want a restore and no re-read", got, c.Stats().Records)
			}
		}
		store.Close()
	}
}

// TestPanicMidApplyRebuildsThePartitionAndDeadLettersTheRecord: a record
// whose evaluation panics after it changed state (PanicError) must not
// crash the member nor leave its half-applied effects: the partition is
// rebuilt from durable state, the poll's other records applied again, and
// the record dead-lettered with reason panic.
func TestPanicMidApplyRebuildsThePartitionAndDeadLettersTheRecord(t *testing.T) {
	brokers := fakeCluster(t)
	rs := exampleRule(t)
	store := openStore(t)
	pay := func(id string) string {
		return `{"event_id":"e-` + id + `","payment_id":"` + id + `","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"2026-11-20T09:00:00Z"}`
	}
	produce(t, brokers,
		&kgo.Record{Topic: "payments", Partition: 0, Value: []byte(pay("p1"))},
		&kgo.Record{Topic: "payments", Partition: 0, Value: []byte(pay("poison"))},
		&kgo.Record{Topic: "payments", Partition: 0, Value: []byte(pay("p3"))},
		&kgo.Record{Topic: "ledger", Partition: 0, Value: []byte(`{"entry_id":"l1","payment_id":"p1","account_id":"a1","amount_cents":100,"occurred_at":"2026-11-20T09:00:01Z"}`)},
	)
	c, err := New(context.Background(), Config{Brokers: brokers, Group: "gpanic", TickInterval: 50 * time.Millisecond}, rs, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	panics := 0
	c.applyRecord = func(p *engine.Partition, rec *engine.Record, now time.Time) error {
		err := p.Apply(rec, now)
		if strings.Contains(string(rec.Value), "poison") {
			// Its effects are in the engine's state now, as they would be
			// after a panic half-way through.
			panics++
			return &engine.PanicError{Value: "injected"}
		}
		return err
	}
	runUntil(t, c, func(s Stats) bool { return s.Records == 4 && s.CaughtUp && s.Durable })
	s := c.Stats()
	c.Close()
	if panics != 1 {
		t.Fatalf("the poison record was applied %d times after its panic, want once", panics)
	}
	// p3 waits for its ledger entry; p1 has one; the poison's half-applied
	// expectation is gone with the rebuild.
	if s.DeadLetters != 1 || s.Pending != 1 {
		t.Fatalf("stats %+v: want 1 dead letter and 1 pending expectation (p3)", s)
	}
	if off, _ := store.AppliedOffset("payments", 0); off != 2 {
		t.Fatalf("applied offset %d, want 2", off)
	}
}

// A changelog topic created while the input topics were not yet visible with
// all their partitions (they had just been created) has too few partitions.
// The member grows it to the inputs' count instead of failing to restore
// "changelog partition 1".
func TestNarrowChangelogIsGrownToTheInputs(t *testing.T) {
	brokers := fakeCluster(t)
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if _, err := kadm.NewClient(adm).CreateTopic(context.Background(), 1, -1, nil, "narrow.changelog"); err != nil {
		t.Fatal(err)
	}
	produce(t, brokers, &kgo.Record{Topic: "payments", Partition: 1, Value: []byte(`{"event_id":"e1","payment_id":"p1","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"2026-11-20T09:00:00Z"}`)})
	cfg := Config{Brokers: brokers, Group: "narrow", TickInterval: 50 * time.Millisecond, Changelog: true}
	c, err := New(context.Background(), cfg, exampleRule(t), openStore(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	runUntil(t, c, func(s Stats) bool { return s.CaughtUp && s.Partitions == 2 && s.Pending == 1 })
	details, err := kadm.NewClient(adm).ListTopics(context.Background(), "narrow.changelog")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(details["narrow.changelog"].Partitions); n != 2 {
		t.Fatalf("changelog has %d partitions, want the inputs' 2", n)
	}
}

// TestPartitionGainedBackIsLoadedAfterItsLostBatch: the member lost
// partition 0 while a batch of it was on its way to Badger, and got it
// back. The new engine is loaded only once that batch is durable, so it
// resumes after the batch instead of evaluating its records a second time
// at another clock (two landings of one violation with two detection times).
func TestPartitionGainedBackIsLoadedAfterItsLostBatch(t *testing.T) {
	store := openStore(t)
	c, err := New(context.Background(), Config{Brokers: fakeCluster(t), Group: "regained"}, exampleRule(t), store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	release := make(chan struct{})
	c.beforeStateCommit = func() error { <-release; return nil }
	c.commits.Add(1)
	c.inflight.Add(1)
	c.commitq <- &batch{
		deltas:  []joinstate.PartitionDelta{{Partition: 0, Delta: &engine.Delta{Ops: map[string]engine.Op{}}, Offsets: map[string]int64{"payments": 41}}},
		offsets: map[string]map[int32]kgo.EpochOffset{},
	}
	time.AfterFunc(200*time.Millisecond, func() { close(release) })
	c.mu.Lock()
	c.assigned["payments"] = map[int32]bool{0: true}
	err = c.loadAssigned(time.Now())
	p := c.parts[0]
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := p.applied["payments"]; got != 41 {
		t.Fatalf("partition 0 loaded with applied offset %d while its lost batch (41) was still on its way", got)
	}
}

// TestBatchStagesAreTimed checks that a batch's stages land in
// invmon_batch_stage_seconds, and the records of the batches in
// invmon_batch_records.
func TestBatchStagesAreTimed(t *testing.T) {
	brokers := fakeCluster(t)
	store := openStore(t)
	reg := prometheus.NewRegistry()
	good := `{"event_id":"e1","payment_id":"p1","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"2026-11-20T09:00:00Z"}`
	produce(t, brokers,
		&kgo.Record{Topic: "payments", Partition: 0, Value: []byte(good)},
		&kgo.Record{Topic: "payments", Partition: 0, Value: []byte(`{"event_id":`)},
	)
	c, err := New(context.Background(), Config{Brokers: brokers, Group: "g1", TickInterval: 50 * time.Millisecond, Registerer: reg}, exampleRule(t), store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, c, func(s Stats) bool { return s.Records == 2 && s.Durable })
	c.Close()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	var records float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "invmon_batch_stage_seconds":
				counts[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
			case "invmon_batch_records":
				records = m.GetHistogram().GetSampleSum()
			}
		}
	}
	if records != 2 {
		t.Errorf("invmon_batch_records sums %v records, want 2", records)
	}
	for _, stage := range BatchStages {
		if counts[stage] == 0 {
			t.Errorf("stage %s never timed; counts %v", stage, counts)
		}
	}
}
