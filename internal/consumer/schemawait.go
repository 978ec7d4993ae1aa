package consumer

// Holding a partition at a record whose schema the registry cannot serve
// yet: nothing after it is applied or committed until it is.

import (
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// wait holds topic at offset until the schema it needs can be fetched, with
// a growing back-off between attempts.
func (p *partition) wait(topic string, offset int64, err error, now time.Time) {
	if p.waiting == nil {
		p.waiting = map[string]*schemaWait{}
	}
	w := p.waiting[topic]
	if w == nil {
		b := backoff.NewExponentialBackOff()
		b.InitialInterval, b.MaxInterval = 250*time.Millisecond, 5*time.Second
		w = &schemaWait{backoff: b}
		p.waiting[topic] = w
	}
	w.offset, w.err, w.held, w.due = offset, err, false, false
	w.retryAt = now.Add(w.backoff.NextBackOff())
}

// holdWaiting pauses fetching of every topic-partition that waits for a
// schema and rewinds it to the record it waits at, so the record is read
// again (and the offset committed for it is never past it).
func (c *Consumer) holdWaiting(now time.Time) {
	pause := map[string][]int32{}
	rewind := map[string]map[int32]kgo.EpochOffset{}
	for _, p := range c.parts {
		for t, w := range p.waiting {
			if w.held {
				continue
			}
			w.held = true
			pause[t] = append(pause[t], p.id)
			if rewind[t] == nil {
				rewind[t] = map[int32]kgo.EpochOffset{}
			}
			rewind[t][p.id] = kgo.EpochOffset{Epoch: -1, Offset: w.offset}
			c.log.Warn("schema registry unavailable; holding the partition at this record and retrying",
				zap.String("topic", t), zap.Int32("partition", p.id), zap.Int64("offset", w.offset),
				zap.Time("retry_at", w.retryAt), zap.Error(w.err))
		}
	}
	if len(pause) > 0 {
		c.cl.PauseFetchPartitions(pause)
		c.cl.SetOffsets(rewind)
	}
	c.countWaiting()
}

// resumeDue resumes fetching the held topic-partitions whose back-off has
// passed: their record is read and tried again in this or the next poll.
func (c *Consumer) resumeDue(now time.Time) {
	resume := map[string][]int32{}
	for _, p := range c.parts {
		for t, w := range p.waiting {
			if w.held && !w.due && !w.retryAt.After(now) {
				w.due = true
				resume[t] = append(resume[t], p.id)
			}
		}
	}
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
}

func (c *Consumer) countWaiting() {
	n := 0
	for _, p := range c.parts {
		n += len(p.waiting)
	}
	c.waitingParts.Set(float64(n))
}
