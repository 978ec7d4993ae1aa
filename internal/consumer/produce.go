package consumer

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// produceBounded produces the records and waits for every acknowledgement,
// at most ProduceTimeout. A broker that stops acknowledging must not block
// the member forever with no signal: the batch fails instead, nothing after
// it is committed, and the process exits for a restart to re-read it.
// While it waits, Ready reports false once the wait passes a third of the
// bound, and invmon_state_produce_waiting_seconds shows how long.
func (c *Consumer) produceBounded(out []*kgo.Record) (kgo.ProduceResults, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ProduceTimeout)
	defer cancel()
	c.produceSince.Store(c.cfg.Now().UnixNano())
	defer c.produceSince.Store(0)
	var (
		mu      sync.Mutex
		results = make(kgo.ProduceResults, 0, len(out))
		left    atomic.Int64
		done    = make(chan struct{})
	)
	left.Store(int64(len(out)))
	// One promise for every record: a closure made per record was an
	// allocation per changelog record.
	promise := func(r *kgo.Record, err error) {
		mu.Lock()
		results = append(results, kgo.ProduceResult{Record: r, Err: err})
		mu.Unlock()
		if left.Add(-1) == 0 {
			close(done)
		}
	}
	for _, r := range out {
		// The context fails records not yet sent when it expires; records
		// already sent to a silent broker are not waited for beyond it.
		c.cl.Produce(ctx, r, promise)
	}
	select {
	case <-done:
		mu.Lock()
		defer mu.Unlock()
		if err := results.FirstErr(); err != nil {
			c.produceFailures.Inc()
			return nil, err
		}
		return results, nil
	case <-ctx.Done():
		c.produceFailures.Inc()
		return nil, fmt.Errorf("%d of %d records not acknowledged within %s", left.Load(), len(out), c.cfg.ProduceTimeout)
	}
}

// produceStalled reports whether a produce has waited longer than a third of
// its bound: the member is then not ready, though not yet failed.
func (c *Consumer) produceStalled() bool {
	since := c.produceSince.Load()
	return since != 0 && c.cfg.Now().Sub(time.Unix(0, since)) > c.cfg.ProduceTimeout/3
}

// produceWaiting is how long the current produce has waited, in seconds.
func (c *Consumer) produceWaiting() float64 {
	since := c.produceSince.Load()
	if since == 0 {
		return 0
	}
	return c.cfg.Now().Sub(time.Unix(0, since)).Seconds()
}

// defaultBatchMaxBytes is franz-go's default ProducerBatchMaxBytes, the
// largest record batch the client writes.
const defaultBatchMaxBytes = 1_000_012

// recordOverhead bounds what a record batch adds around one record's key,
// value and headers: the 61-byte batch header and the record's varint
// lengths, attributes and deltas, with room to spare.
const recordOverhead = 256

// deadLetterLimit reads the dead-letter topic's max.message.bytes, so a
// dead letter is truncated to what the topic accepts. A topic limit that
// cannot be read falls back to the producer's batch limit.
func (c *Consumer) deadLetterLimit(ctx context.Context) int {
	limit := defaultBatchMaxBytes
	rcs, err := c.adm.DescribeTopicConfigs(ctx, c.cfg.DLQTopic)
	if err != nil {
		c.log.Warn("read dead-letter topic limit; using the producer's batch limit")
		return limit
	}
	for _, rc := range rcs {
		for _, cfg := range rc.Configs {
			if cfg.Key != "max.message.bytes" || cfg.Value == nil {
				continue
			}
			if n, err := strconv.Atoi(*cfg.Value); err == nil && n > 0 {
				limit = min(limit, n)
			}
		}
	}
	return limit
}

// fitDeadLetter truncates a dead letter's key and value so the record fits
// in limit bytes, and says so in headers with the original sizes: a record
// too large for the dead-letter topic would otherwise fail the batch and
// stop the member on every restart.
func fitDeadLetter(r *kgo.Record, limit int) {
	size := func() int {
		n := recordOverhead + len(r.Key) + len(r.Value)
		for _, h := range r.Headers {
			n += len(h.Key) + len(h.Value) + 10
		}
		return n
	}
	if limit <= 0 || size() <= limit {
		return
	}
	origKey, origValue := len(r.Key), len(r.Value)
	r.Headers = append(r.Headers,
		kgo.RecordHeader{Key: "invmon.truncated", Value: []byte("true")},
		kgo.RecordHeader{Key: "invmon.original.value.size", Value: []byte(strconv.Itoa(origValue))},
		kgo.RecordHeader{Key: "invmon.original.key.size", Value: []byte(strconv.Itoa(origKey))},
	)
	// Keys are meant to be short: keep at most a quarter of the room.
	if over := size() - limit; over > 0 && len(r.Key) > limit/4 {
		r.Key = r.Key[:max(limit/4, len(r.Key)-over)]
	}
	if over := size() - limit; over > 0 {
		r.Value = r.Value[:max(0, len(r.Value)-over)]
	}
}
