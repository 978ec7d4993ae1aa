package kafkaconn

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Compacted is the topic configuration of a compacted topic: it keeps each
// key's latest record.
func Compacted() map[string]*string {
	return map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
}

// EnsureTopic creates topic with the given partitions and configuration
// (replication: the brokers' default) unless it exists, and reports whether
// it created it. Members of a new group start together and race to create
// the same topic: losing the race is success. An existing topic is left as
// it is.
func EnsureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) (created bool, err error) {
	return EnsureTopicReplicated(ctx, adm, topic, partitions, -1, configs)
}

// EnsureTopicReplicated is EnsureTopic with a replication factor; -1 takes
// the brokers' default.
func EnsureTopicReplicated(ctx context.Context, adm *kadm.Client, topic string, partitions int32, replication int16, configs map[string]*string) (created bool, err error) {
	resp, err := adm.CreateTopic(ctx, partitions, replication, configs, topic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, kerr.TopicAlreadyExists):
		return false, nil
	default:
		return false, fmt.Errorf("create topic %s: %w", topic, err)
	}
}
