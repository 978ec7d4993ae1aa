// Package bench measures the monitor's end-to-end rate against a bare
// franz-go consumer reading the same topics on the same broker in the same
// run: the ratio of the two is the figure that travels between machines.
package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

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
