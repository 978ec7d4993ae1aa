package consumer

// Offsets and lag: where each owned partition stands against the
// brokers' start and end offsets.

import (
	"context"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"
)

// refreshOffsets learns the start and end offsets of the assigned
// partitions, at most once per tick: an input is idle only once it has read
// up to its end.
func (c *Consumer) refreshOffsets(now time.Time) {
	if now.Sub(c.endsAt) < c.cfg.TickInterval || len(c.parts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := c.adm.ListEndOffsets(ctx, c.topics...)
	if err != nil {
		c.log.Warn("list end offsets", zap.Error(err))
		return
	}
	starts, err := c.adm.ListStartOffsets(ctx, c.topics...)
	if err != nil {
		c.log.Warn("list start offsets", zap.Error(err))
		return
	}
	c.ends, c.starts = toMap(ends), toMap(starts)
	c.endsAt = now
	for _, p := range c.parts {
		for _, t := range c.topics {
			if end, ok := c.ends[t][p.id]; ok {
				c.lag.WithLabelValues(t, strconv.Itoa(int(p.id))).Set(float64(max(0, end-c.position(p, t))))
			}
		}
	}
}

func toMap(offs kadm.ListedOffsets) map[string]map[int32]int64 {
	out := map[string]map[int32]int64{}
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.Offset
	})
	return out
}

// position is the next offset this member will process on topic/partition.
func (c *Consumer) position(p *partition, topic string) int64 {
	pos := p.applied[topic] + 1
	if n, ok := p.next[topic]; ok && n > pos {
		pos = n
	}
	if s, ok := c.starts[topic][p.id]; ok && s > pos {
		pos = s
	}
	return pos
}

func (c *Consumer) caughtUp(p *partition, topic string) bool {
	end, ok := c.ends[topic][p.id]
	return ok && c.position(p, topic) >= end
}
