// Package changes is the stream of violation changes of a consumer group:
// every violation that opens or resolves, as the group sees it.
//
// Each member owns some partitions and so knows only their violations;
// paging on those alone would split one rule's alert into partial counts
// per member, with tiers that disagree. So every change a member makes is
// written, before the member commits the input offsets that made it, to the
// group's compacted topic StateTopic ("<group>.violations-state"), keyed by
// violation id (consumer.Config.Feed); and every member follows that topic
// whole (Follow) and hands it to its Subscribers (alert.Manager is one).
// The monitor does so whenever kafka.changelog is on, that is whenever
// partitions may be spread over members. With the changelog off one member
// owns every partition: alerting then reads open violations from the local
// state and learns of changes from the committer (consumer.Config.OnCommit,
// through the same Subscriber methods).
//
// This topic is internal and holds the group's violations as they are (the
// latest record of each id). It is not the violation events topic
// (kafka.violation_events_topic, package outbox), which publishes each opening and
// resolution once, minimised by the privacy settings, for other systems.
package changes

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/violation"
)

// StateTopic returns the topic of a group's violation changes.
func StateTopic(group string) string { return group + ".violations-state" }

// EnsureTopic creates the group's StateTopic, compacted with one partition
// (one order for every member to read), unless it exists.
func EnsureTopic(ctx context.Context, adm *kadm.Client, group string) error {
	if _, err := kafkaconn.EnsureTopic(ctx, adm, StateTopic(group), 1, kafkaconn.Compacted()); err != nil {
		return fmt.Errorf("violation changes topic: %w", err)
	}
	return nil
}

// Records renders violation changes as records of the group's StateTopic.
func Records(group string, changed []violation.Violation) ([]*kgo.Record, error) {
	out := make([]*kgo.Record, 0, len(changed))
	for i := range changed {
		b, err := json.Marshal(&changed[i])
		if err != nil {
			return nil, fmt.Errorf("encode violation: %w", err)
		}
		out = append(out, &kgo.Record{Topic: StateTopic(group), Partition: 0, Key: []byte(changed[i].ID), Value: b})
	}
	return out, nil
}

// Subscriber consumes the stream (alert.Manager is one).
type Subscriber interface {
	// Seed is called once, when the follower has caught up with the topic
	// as it was at the start, with the group's open violations then.
	Seed(open []violation.Violation)
	// Observe is called with every later change, in topic order.
	// Redelivered changes reach it again; it must be idempotent.
	Observe(vs ...violation.Violation)
}

// Follow reads the group's StateTopic from its start until ctx ends. The
// records already in the topic when it started are gathered, latest per
// violation, and handed to each subscriber's Seed once, as the group's
// open violations; every later record goes to Observe, in order. A
// subscriber seeded so never acts on what the local state still holds but
// another member has since resolved, and the alert manager sends nothing
// before it has its seed.
func Follow(ctx context.Context, brokers []string, opts []kgo.Opt, group string, log *zap.Logger, subs ...Subscriber) error {
	topic := StateTopic(group)
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		return fmt.Errorf("violation changes client: %w", err)
	}
	defer cl.Close()
	end, err := endOffset(ctx, cl, topic)
	if err != nil {
		return err
	}
	pending := map[string]violation.Violation{}
	seeded := false
	finishSeed := func() {
		open := make([]violation.Violation, 0, len(pending))
		for _, v := range pending {
			if v.State == violation.Open {
				open = append(open, v)
			}
		}
		for _, s := range subs {
			s.Seed(open)
		}
		seeded, pending = true, nil
		log.Info("violation changes caught up", zap.Int64("records", end), zap.Int("open", len(open)))
	}
	if end == 0 {
		finishSeed()
	}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		for _, fe := range fs.Errors() {
			log.Warn("read violation changes", zap.Error(fe.Err))
		}
		fs.EachRecord(func(r *kgo.Record) {
			var v violation.Violation
			if err := json.Unmarshal(r.Value, &v); err != nil {
				log.Warn("undecodable violation change", zap.Int64("offset", r.Offset), zap.Error(err))
			} else if seeded {
				for _, s := range subs {
					s.Observe(v)
				}
			} else {
				pending[v.ID] = v
			}
			if !seeded && r.Offset+1 >= end {
				finishSeed()
			}
		})
	}
}

// endOffset is the topic's end offset now: where catching up ends. It
// retries until the broker answers, since alerting waits for it anyway.
func endOffset(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	adm := kadm.NewClient(cl)
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			if o, ok := ends.Lookup(topic, 0); ok && o.Err == nil {
				return o.Offset, nil
			} else if ok {
				err = o.Err
			}
		}
		select {
		case <-ctx.Done():
			return 0, nil
		case <-time.After(time.Second):
		}
	}
}
