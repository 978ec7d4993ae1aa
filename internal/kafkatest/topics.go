package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Fake starts an in-process kfake cluster (franz-go's fake Kafka) holding the
// given topics with the given partition counts, closed when the test ends, and
// returns one bootstrap address. Topics are not auto-created, unlike on the
// real test broker, so a test of a missing topic sees it missing.
func Fake(t testing.TB, topics map[string]int32) string {
	t.Helper()
	var opts []kfake.Opt
	for _, name := range slices.Sorted(maps.Keys(topics)) {
		opts = append(opts, kfake.SeedTopics(topics[name], name))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kafkatest: kfake: %v", err)
	}
	t.Cleanup(c.Close)
	// One address is enough to bootstrap, and a single host:port can be passed
	// to kgo.SeedBrokers as it is.
	return c.ListenAddrs()[0]
}

// Seeds splits a bootstrap address list as Kafka returns it (comma-separated,
// as KAFKA_BROKERS may be) into kgo.SeedBrokers arguments.
func Seeds(brokers string) []string {
	var out []string
	for _, s := range strings.Split(brokers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// CreateTopics creates topics with the given partition count and the broker's
// default replication factor, and waits until every partition has a leader.
// A topic that already exists with that partition count is accepted, so tests
// can run again against a long-lived KAFKA_BROKERS cluster.
func CreateTopics(t testing.TB, brokers string, partitions int32, topics ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(Seeds(brokers)...))
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	adm := kadm.NewClient(cl)
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	resp, err := adm.CreateTopics(ctx, partitions, -1, nil, topics...)
	if err != nil {
		t.Fatalf("kafkatest: create topics %v on %s: %v", topics, brokers, err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			t.Fatalf("kafkatest: create topic %s on %s: %v %s", r.Topic, brokers, r.Err, r.ErrMessage)
		}
	}
	if err := waitLeaders(ctx, adm, partitions, topics); err != nil {
		t.Fatalf("kafkatest: topics %v on %s: %v", topics, brokers, err)
	}
}

// waitLeaders polls metadata until every partition of topics has a leader: a
// created topic is not yet writable everywhere the moment CreateTopics returns.
func waitLeaders(ctx context.Context, adm *kadm.Client, partitions int32, topics []string) error {
	for {
		err := leadersReady(ctx, adm, partitions, topics)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func leadersReady(ctx context.Context, adm *kadm.Client, partitions int32, topics []string) error {
	md, err := adm.Metadata(ctx, topics...)
	if err != nil {
		return err
	}
	for _, name := range topics {
		td, ok := md.Topics[name]
		switch {
		case !ok:
			return fmt.Errorf("topic %s not in metadata", name)
		case td.Err != nil:
			return fmt.Errorf("topic %s: %w", name, td.Err)
		case int32(len(td.Partitions)) != partitions:
			return fmt.Errorf("topic %s has %d partitions, want %d", name, len(td.Partitions), partitions)
		}
		for _, p := range td.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return fmt.Errorf("topic %s partition %d has no leader yet (%v)", name, p.Partition, p.Err)
			}
		}
	}
	return nil
}

var (
	topicSeq atomic.Int64
	// Only letters, digits and '-': Kafka treats '.' and '_' as the same in
	// metric names and refuses topics that collide that way.
	topicUnsafe = regexp.MustCompile(`[^a-zA-Z0-9-]+`)
)

// Topic returns a topic name unique to this test and call, built from base and
// the test's name, so that tests sharing one broker (Kafka) or one
// KAFKA_BROKERS cluster across runs never read each other's records.
func Topic(t testing.TB, base string) string {
	t.Helper()
	name := topicUnsafe.ReplaceAllString(t.Name(), "-")
	if len(name) > 150 {
		name = name[:150] // Kafka allows 249 characters
	}
	return fmt.Sprintf("%s-%s-%d-%d", base, name, time.Now().UnixNano()%1e9, topicSeq.Add(1))
}
