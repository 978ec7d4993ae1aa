package consumer

// The poll loop: poll, hand each partition's records to its engine,
// dead-letter what cannot be applied, and queue the batch for the committer.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/rules"
)

// Run polls and processes until ctx is done, then finishes the batch in hand
// and returns. Call Close afterwards to leave the group.
func (c *Consumer) Run(ctx context.Context) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, c.cfg.TickInterval)
		polled := c.stages.start(stagePoll)
		fetches := c.cl.PollRecords(pctx, c.cfg.MaxPollRecords)
		polled()
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			// The client retries retriable errors itself; what reaches here is
			// worth an operator's eye but not worth stopping for.
			c.log.Warn("fetch error", zap.String("topic", fe.Topic), zap.Int32("partition", fe.Partition), zap.Error(fe.Err))
		}
		err := c.process(fetches)
		if err == nil {
			if e := c.commitErr.Load(); e != nil {
				err = *e
			}
		}
		c.cl.AllowRebalance()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return c.flush()
		}
	}
}

func (c *Consumer) process(fetches kgo.Fetches) error {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.loadAssigned(now); err != nil {
		return err
	}
	c.resumeDue(now)
	work := map[*partition][]kgo.FetchTopicPartition{}
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 {
			return
		}
		p := c.parts[ftp.Partition]
		if p == nil || !c.assigned[ftp.Topic][ftp.Partition] {
			return // revoked since the fetch: the next owner reads it
		}
		work[p] = append(work[p], ftp)
	})
	if n := fetches.NumRecords(); n > 0 {
		c.stages.records.Observe(float64(n))
	}
	applied := c.stages.start(stageApply)
	var wg sync.WaitGroup
	errs := make(chan error, len(work))
	for p, ftps := range work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.apply(p, ftps, now); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	applied()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// Before the offsets to commit are taken below: a partition held at a
	// record is rewound to it, so its commit never passes it.
	c.holdWaiting(now)
	c.refreshOffsets(now)
	c.owned.Set(float64(len(c.parts)))
	if err := c.recheckTopics(now); err != nil {
		return err
	}
	advanced := c.stages.start(stageAdvance)
	deltas := make([]joinstate.PartitionDelta, 0, len(c.parts))
	var dlq, changelog []*kgo.Record
	for _, p := range c.parts {
		for _, t := range c.topics {
			p.eng.SetCaughtUp(t, c.caughtUp(p, t))
		}
		p.eng.Advance(now)
		// A failed state read leaves the batch unjudged: nothing of it may
		// become durable, so the consumer stops and the records are re-read.
		if err := p.eng.Err(); err != nil {
			return fmt.Errorf("partition %d: %w", p.id, err)
		}
		d := p.eng.TakeDelta()
		if d.Empty() && len(p.batch) == 0 {
			continue
		}
		deltas = append(deltas, joinstate.PartitionDelta{Partition: p.id, Delta: d, Offsets: p.batch})
		dlq = append(dlq, p.dlq...)
		if c.cfg.Changelog {
			changelog = append(changelog, c.changelogRecords(p.id, d, p.batch)...)
		}
	}
	advanced()
	if c.cfg.OnBlind != nil {
		var blind map[string]time.Duration
		for _, p := range c.parts {
			for s, lag := range p.eng.Blind() {
				if blind == nil {
					blind = map[string]time.Duration{}
				}
				blind[s] = max(blind[s], lag)
			}
		}
		c.cfg.OnBlind(blind)
	}
	if len(deltas) == 0 {
		if len(c.parts) > 0 || len(c.assigned) > 0 {
			c.ready.Store(true)
		}
		return nil
	}
	for _, pd := range deltas {
		p := c.parts[pd.Partition]
		for t, off := range p.batch {
			p.applied[t] = off
		}
		p.batch = map[string]int64{}
		p.dlq = nil
	}
	// The batch is durable in the background while the next one is
	// evaluated: the two cores then work on both. Batches are made durable
	// one at a time, in order; the offsets to commit are taken now, before
	// the next poll moves them.
	c.commits.Add(1)
	c.inflight.Add(1)
	b := &batch{deltas: deltas, dlq: dlq, changelog: changelog, offsets: c.cl.UncommittedOffsets()}
	enqueued := c.stages.start(stageEnqueue)
	c.commitq <- b
	enqueued()
	return nil
}

// apply hands one poll's records of a partition to its engine. A record
// whose evaluation panicked half-way leaves the engine's state half-changed:
// the engine is then rebuilt from durable state, the poll's records are
// applied again without that one, and it becomes a dead letter (reason
// panic). So a panic neither crashes the member (and crash-loops it on the
// same record) nor commits past a record whose effects were lost.
func (c *Consumer) apply(p *partition, ftps []kgo.FetchTopicPartition, now time.Time) error {
	poisoned := map[*kgo.Record]*engine.PanicError{}
	for {
		bad, pe := c.applyOnce(p, ftps, now, poisoned)
		if bad == nil {
			return nil
		}
		poisoned[bad] = pe
		c.log.Error("evaluating a record panicked; rebuilding the partition without it and dead-lettering it",
			zap.String("topic", bad.Topic), zap.Int32("partition", bad.Partition), zap.Int64("offset", bad.Offset),
			zap.Any("panic", pe.Value), zap.ByteString("stack", pe.Stack))
		// The engine's durable state is what every batch before this one
		// wrote: wait until all of them are written, then reload it.
		if err := c.flush(); err != nil {
			return err
		}
		p.eng.Close()
		eng, err := c.newEngine(p.id, now)
		if err != nil {
			return fmt.Errorf("rebuild partition %d after a panic: %w", p.id, err)
		}
		p.eng, p.batch, p.dlq = eng, map[string]int64{}, nil
	}
}

// applyOnce applies the records, dead-lettering the poisoned ones. It stops
// at the first record that panics while changing state and returns it.
func (c *Consumer) applyOnce(p *partition, ftps []kgo.FetchTopicPartition, now time.Time, poisoned map[*kgo.Record]*engine.PanicError) (*kgo.Record, *engine.PanicError) {
	var rec engine.Record
	var handled int64
	var skipped map[string]int // allocated only when a record is read again
	for _, ftp := range ftps {
		applied := p.applied[ftp.Topic]
		if w := p.waiting[ftp.Topic]; w != nil && !w.due {
			continue // fetched before the pause: read again from w.offset
		}
	records:
		for _, r := range ftp.Records {
			if r.Offset <= applied {
				p.next[ftp.Topic] = r.Offset + 1
				handled++
				if skipped == nil {
					skipped = map[string]int{}
				}
				skipped[ftp.Topic]++
				continue // its effects are already in the state
			}
			if pe, ok := poisoned[r]; ok {
				p.next[ftp.Topic] = r.Offset + 1
				handled++
				p.dlq = append(p.dlq, c.deadLetter(r, &engine.DecodeError{Reason: engine.ReasonPanic, Err: pe}))
				p.batch[ftp.Topic] = r.Offset
				continue
			}
			rec = engine.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
			apply := (*engine.Partition).Apply
			if c.applyRecord != nil {
				apply = c.applyRecord
			}
			err := apply(p.eng, &rec, now)
			if errors.Is(err, rules.ErrSchemaUnavailable) {
				// Hold the topic-partition here: nothing after this record
				// is applied before it, and holdWaiting rewinds to it.
				p.wait(ftp.Topic, r.Offset, err, now)
				c.schemaRetries.WithLabelValues(ftp.Topic).Inc()
				break records
			}
			p.next[ftp.Topic] = r.Offset + 1
			handled++
			if w := p.waiting[ftp.Topic]; w != nil {
				delete(p.waiting, ftp.Topic)
				c.log.Info("schema registry reachable again; partition resumed", zap.String("topic", ftp.Topic), zap.Int32("partition", p.id), zap.Int64("offset", r.Offset))
			}
			if err != nil {
				var pe *engine.PanicError
				if errors.As(err, &pe) {
					return r, pe
				}
				var de *engine.DecodeError
				if !errors.As(err, &de) {
					de = &engine.DecodeError{Reason: "error", Err: err}
				}
				p.dlq = append(p.dlq, c.deadLetter(r, de))
			}
			p.batch[ftp.Topic] = r.Offset
		}
	}
	// Counted once the whole batch went through: a rerun after a panic
	// counts nothing twice. Records held for a schema are not counted yet.
	c.records.Add(handled)
	for t, n := range skipped {
		c.skipped.WithLabelValues(t).Add(float64(n))
	}
	return nil, nil
}

func (c *Consumer) deadLetter(r *kgo.Record, de *engine.DecodeError) *kgo.Record {
	c.dlqCount.Add(1)
	c.dlqOut.WithLabelValues(r.Topic, de.Reason).Inc()
	msg := de.Error()
	if len(msg) > maxErrorHeader {
		// The message may quote the record; the record is there already.
		msg = msg[:maxErrorHeader] + "…"
	}
	dl := &kgo.Record{
		Topic:     c.cfg.DLQTopic,
		Partition: 0,
		Key:       r.Key,
		Value:     r.Value,
		Headers: []kgo.RecordHeader{
			{Key: "invmon.error", Value: []byte(msg)},
			{Key: "invmon.reason", Value: []byte(de.Reason)},
			{Key: "invmon.source.topic", Value: []byte(r.Topic)},
			{Key: "invmon.source.partition", Value: []byte(strconv.Itoa(int(r.Partition)))},
			{Key: "invmon.source.offset", Value: []byte(strconv.FormatInt(r.Offset, 10))},
			{Key: "invmon.stream", Value: []byte(de.Stream)},
			{Key: "invmon.rule", Value: []byte(de.Rule)},
		},
	}
	fitDeadLetter(dl, c.dlqLimit)
	return dl
}

// maxErrorHeader bounds the error message a dead letter carries.
const maxErrorHeader = 1024
