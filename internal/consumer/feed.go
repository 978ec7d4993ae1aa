package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

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
	resp, err := c.adm.CreateTopic(ctx, 1, -1, map[string]*string{
		"cleanup.policy": kadm.StringPtr("compact"),
	}, FeedTopic(c.cfg.Group))
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create violation feed topic: %w", err)
	}
	return nil
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

// FollowFeed reads the group's violation feed from its start until ctx ends
// and hands every violation, in order, to observe: the alert manager's view
// of the whole group.
func FollowFeed(ctx context.Context, brokers []string, opts []kgo.Opt, group string, log *zap.Logger, observe func(violation.Violation)) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{FeedTopic(group): {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		return fmt.Errorf("violation feed client: %w", err)
	}
	defer cl.Close()
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
				return
			}
			observe(v)
		})
	}
}
