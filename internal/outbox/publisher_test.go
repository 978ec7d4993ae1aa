package outbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/violation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// published is one record of the violations topic as a reader sees it.
type published struct {
	event string
	v     violation.Violation
}

// newCluster starts an in-process cluster (kfake supports transactions).
func newCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// openOutbox opens a state directory with its outbox enabled.
func openOutbox(t *testing.T, dir string) *joinstate.Store {
	t.Helper()
	s, err := joinstate.Open(dir, joinstate.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.EnableOutbox(); err != nil {
		t.Fatal(err)
	}
	return s
}

// decide commits violation changes the way a worker does: as part of a
// partition's state commit.
func decide(t *testing.T, s *joinstate.Store, vs ...violation.Violation) {
	t.Helper()
	if err := s.Commit(joinstate.PartitionDelta{Partition: 0, Delta: &engine.Delta{Changed: vs}}); err != nil {
		t.Fatal(err)
	}
}

func change(id string, st violation.State) violation.Violation {
	return violation.Violation{ID: id, Rule: "r", Key: "key-" + id, State: st, Customer: "acct-" + id}
}

// run starts the publisher and returns a function that stops it and
// returns Run's error.
func run(t *testing.T, p *Publisher) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop() })
	return stop
}

// readTopic reads every committed record of topic until want have arrived
// (then one more poll to see any extra) or 10 s passed.
func readTopic(t *testing.T, brokers []string, topic string, want int) []published {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []published
	deadline := time.Now().Add(10 * time.Second)
	extra := false
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			var p published
			for _, h := range r.Headers {
				if h.Key == "invmon.event" {
					p.event = string(h.Value)
				}
			}
			if err := json.Unmarshal(r.Value, &p.v); err != nil {
				t.Errorf("record %s@%d: %v", r.Topic, r.Offset, err)
			}
			if string(r.Key) != p.v.ID {
				t.Errorf("record key %q, violation id %q", r.Key, p.v.ID)
			}
			out = append(out, p)
		})
		if len(out) >= want {
			if extra {
				break
			}
			extra = true
		}
	}
	return out
}

// summary lists each violation's changes in the order the topic holds them:
// records are keyed by violation id, so order holds per violation, not
// across violations (they may sit in different partitions).
func summary(ps []published) string {
	per := map[string][]string{}
	for _, p := range ps {
		per[p.v.ID] = append(per[p.v.ID], p.event)
	}
	return fmt.Sprint(per)
}

func TestPublishesEachChangeOnceInOrderPerViolationAndEmptiesTheOutbox(t *testing.T) {
	brokers := newCluster(t)
	s := openOutbox(t, t.TempDir())
	decide(t, s, change("v1", violation.Open), change("v2", violation.Open))
	decide(t, s, change("v1", violation.Resolved))

	p, err := New(context.Background(), Config{Brokers: brokers, Topic: "violations", Interval: 20 * time.Millisecond}, s, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stop := run(t, p)
	got := summary(readTopic(t, brokers, "violations", 3))
	if want := "map[v1:[opened resolved] v2:[opened]]"; got != want {
		t.Fatalf("published %v, want %v", got, want)
	}
	// A change decided while the publisher runs goes out too.
	decide(t, s, change("v2", violation.Resolved))
	got = summary(readTopic(t, brokers, "violations", 4))
	if want := "map[v1:[opened resolved] v2:[opened resolved]]"; got != want {
		t.Fatalf("published %v, want %v", got, want)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	left, err := s.Outbox(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("outbox still holds %d entries after publishing", len(left))
	}
}

// TestRestartDropsWhatAWholeTransactionAlreadyPublished stands for a crash
// after the Kafka transaction committed and before the outbox entries were
// deleted: the progress topic says seq 2 went out while the outbox still
// holds 1..3. The restarted publisher must send only 3.
func TestRestartDropsWhatAWholeTransactionAlreadyPublished(t *testing.T) {
	brokers := newCluster(t)
	s := openOutbox(t, t.TempDir())
	decide(t, s, change("v1", violation.Open), change("v2", violation.Open), change("v3", violation.Open))

	p, err := New(context.Background(), Config{Brokers: brokers, Topic: "violations", Interval: 20 * time.Millisecond}, s, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	member, err := s.MemberID()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("violations.progress"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Key: []byte(member), Value: binary.BigEndian.AppendUint64(nil, 2)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	run(t, p)
	got := summary(readTopic(t, brokers, "violations", 1))
	if got != "map[v3:[opened]]" {
		t.Fatalf("published %v, want only [opened v3]", got)
	}
}

// TestGracefulStopPublishesWhatIsDecided decides a change while the
// publisher waits for its next poll, then stops it: the change goes out
// before Run returns.
func TestGracefulStopPublishesWhatIsDecided(t *testing.T) {
	brokers := newCluster(t)
	s := openOutbox(t, t.TempDir())
	decide(t, s, change("v1", violation.Open))
	p, err := New(context.Background(), Config{Brokers: brokers, Topic: "violations", Interval: time.Hour}, s, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stop := run(t, p)
	// What waits at the start goes out at once, not after the interval.
	if got := summary(readTopic(t, brokers, "violations", 1)); got != "map[v1:[opened]]" {
		t.Fatalf("published %v at the start, want map[v1:[opened]]", got)
	}
	decide(t, s, change("v1", violation.Resolved))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := summary(readTopic(t, brokers, "violations", 2)); got != "map[v1:[opened resolved]]" {
		t.Fatalf("published %v after a graceful stop, want map[v1:[opened resolved]]", got)
	}
}
