package consumer

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

// The violation feed is how the members of a group page as one. Each member
// owns some partitions and so knows only their violations; paging on those
// alone would split one rule's alert into partial counts per member, with
// tiers that disagree. So every change to a violation is also written to the
// compacted topic "<group>.violations-state", keyed by violation id, and
// every member reads all of it: each sees every open violation of the group
// and sends the same alert, which Alertmanager deduplicates.

// FeedTopic returns the violation feed topic of a group.
func FeedTopic(group string) string { return group + ".violations-state" }

func (c *Consumer) ensureFeed(ctx context.Context) error {
	_, err := kafkaconn.EnsureTopic(ctx, c.adm, FeedTopic(c.cfg.Group), 1, kafkaconn.Compacted())
	return err
}

func (c *Consumer) feedRecords(changed []violation.Violation) ([]*kgo.Record, error) {
	out := make([]*kgo.Record, 0, len(changed))
	for i := range changed {
		b, err := json.Marshal(&changed[i])
		if err != nil {
			return nil, fmt.Errorf("encode violation: %w", err)
		}
		out = append(out, &kgo.Record{Topic: FeedTopic(c.cfg.Group), Partition: 0, Key: []byte(changed[i].ID), Value: b})
	}
	return out, nil
}

// FollowFeed reads the group's violation feed from its start until ctx ends.
// The records that were already in the feed when it started are gathered,
// latest per violation, and handed to seed once, as the group's open
// violations; every later record goes to observe, in order. Alerting seeded
// so never pages on what the local state still holds but another member has
// since resolved, and it sends nothing before it has caught up (the alert
// manager waits for its seed).
func FollowFeed(ctx context.Context, brokers []string, opts []kgo.Opt, group string, log *zap.Logger, seed func([]violation.Violation), observe func(violation.Violation)) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{FeedTopic(group): {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		return fmt.Errorf("violation feed client: %w", err)
	}
	defer cl.Close()
	end, err := feedEnd(ctx, cl, group)
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
		seed(open)
		seeded, pending = true, nil
		log.Info("violation feed caught up", zap.Int64("records", end), zap.Int("open", len(open)))
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
			log.Warn("read violation feed", zap.Error(fe.Err))
		}
		fs.EachRecord(func(r *kgo.Record) {
			var v violation.Violation
			if err := json.Unmarshal(r.Value, &v); err != nil {
				log.Warn("undecodable violation in the feed", zap.Int64("offset", r.Offset), zap.Error(err))
			} else if seeded {
				observe(v)
			} else {
				pending[v.ID] = v
			}
			if !seeded && r.Offset+1 >= end {
				finishSeed()
			}
		})
	}
}

// feedEnd is the feed's end offset now: where catching up ends. It retries
// until the broker answers, since alerting waits for it anyway.
func feedEnd(ctx context.Context, cl *kgo.Client, group string) (int64, error) {
	adm := kadm.NewClient(cl)
	for {
		ends, err := adm.ListEndOffsets(ctx, FeedTopic(group))
		if err == nil {
			if o, ok := ends.Lookup(FeedTopic(group), 0); ok && o.Err == nil {
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
