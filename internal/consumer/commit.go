package consumer

// The commit pipeline. The poll loop evaluates a batch in memory, takes its
// offsets and queues it; two goroutines then make the batches durable in
// order, while the poll loop already evaluates the next:
//
//  1. the producer stage: dead letters, changelog records (with
//     kafka.changelog) and the batch's violation changes (the group's stream,
//     package changes, always) are produced and acknowledged (bounded by
//     kafka.produce_timeout);
//  2. the state stage: the state changes, the applied offsets and the
//     outbox entries are one Badger commit, synced to disk;
//  3. then, in the state stage, the Kafka offset commit is sent,
//     asynchronously.
//
// Each stage takes the batches one at a time, in order, so batch N+1's
// records are produced while batch N is written to Badger (the produce is
// mostly waiting for the brokers; the Badger commit is mostly CPU). A batch
// reaches the state stage only after its own records are acknowledged, and
// batches become durable in the order they were polled.
//
// Alerting and the API learn of the changes from the stream (changes.Follow
// into the group view), not from here: the stream holds at least what the
// state holds because of the order of 1 and 2.
//
// A crash before 2 loses the batch's state, and the records are read and
// applied again (a dead letter may then appear twice; changelog and stream
// records are keyed, and a change made again is the same change, ids being
// deterministic). The changelog, the stream and the dead-letter topic may
// then hold the next batch's records too, as if the crash had come after
// its produce: the changelog holds whole batches in order, each with its
// applied offsets, so a restore from it is a state as of a batch boundary.
// A crash between 2 and 3 costs a re-read: records at or below the applied
// offsets are skipped.
// Nothing after a failed batch is made durable or committed: the failure
// stops the consumer at its next poll, and neither stage starts a batch once
// it is known.

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/changes"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/violation"
)

// batch is one poll's work on its way to durability.
type batch struct {
	deltas         []joinstate.PartitionDelta
	dlq, changelog []*kgo.Record
	offsets        map[string]map[int32]kgo.EpochOffset
	// failed is set by the producer stage when the batch, or one before
	// it, failed: the state stage then only counts it off.
	failed bool
}

// producer is the pipeline's first stage: it produces each batch's dead
// letters, changelog and violation changes, waits for their
// acknowledgements, and hands the batch to the state stage. A failure stops
// the consumer: the next poll returns it, and no batch after it is produced
// or made durable.
func (c *Consumer) producer() {
	defer close(c.stateq)
	for b := range c.commitq {
		if c.commitErr.Load() == nil {
			if err := c.produceBatch(b); err != nil {
				b.failed = true
				c.commitErr.CompareAndSwap(nil, &err)
			}
		} else {
			b.failed = true
		}
		c.stateq <- b
	}
}

// stateCommitter is the pipeline's second stage: the synced Badger commit
// of each batch, in order, then its asynchronous Kafka commit. A batch
// whose produce failed, or any after a failure, is not committed.
func (c *Consumer) stateCommitter() {
	for b := range c.stateq {
		if !b.failed && c.commitErr.Load() == nil {
			if err := c.commitState(b); err != nil {
				c.commitErr.CompareAndSwap(nil, &err)
			} else {
				// Nothing reads the batch's deltas any more: their
				// records are acknowledged and their state committed.
				for _, pd := range b.deltas {
					pd.Delta.Recycle()
				}
			}
		}
		c.inflight.Add(-1)
		c.commits.Done()
	}
}

// produceBatch produces the batch's dead letters, changelog records and
// violation changes and waits for their acknowledgement: once the local state
// says a record is applied it is never read again, so its dead letter must be
// safe before that, and the changelog and the group's stream must hold at
// least what the local state holds.
func (c *Consumer) produceBatch(b *batch) error {
	out := append(b.dlq, b.changelog...)
	var changed []violation.Violation
	for _, pd := range b.deltas {
		changed = append(changed, pd.Delta.Changed...)
	}
	stream, err := changes.Records(c.cfg.Group, changed)
	if err != nil {
		return err
	}
	out = append(out, stream...)
	if len(out) == 0 {
		return nil
	}
	if c.beforeProduce != nil {
		c.beforeProduce(out)
	}
	produced := c.stages.start(stageProduce)
	results, err := c.produceBounded(out)
	produced()
	if err != nil {
		return fmt.Errorf("produce dead letters, changelog and violation changes: %w", err)
	}
	ends := map[int32]int64{}
	for _, r := range results {
		if r.Record.Topic == c.changelogTopic() {
			ends[r.Record.Partition] = max(ends[r.Record.Partition], r.Record.Offset+1)
		}
	}
	for i := range b.deltas {
		b.deltas[i].ChangelogEnd = ends[b.deltas[i].Partition]
	}
	return nil
}

// commitState makes a produced batch durable: the synced Badger commit, then
// the asynchronous Kafka commit of its offsets.
func (c *Consumer) commitState(b *batch) error {
	if c.beforeStateCommit != nil {
		if err := c.beforeStateCommit(); err != nil {
			return err
		}
	}
	committed := c.stages.start(stageStateCommit)
	err := c.store.Commit(b.deltas...)
	committed()
	if err != nil {
		return err
	}
	// The Kafka commit is asynchronous: the state already records what is
	// applied, and records at or below that are skipped on re-read, so a
	// commit that lags or fails costs a re-read, never correctness. Waiting
	// for it would stall the next batch by a broker round trip.
	c.setDurable(b.offsets)
	c.cl.CommitOffsets(context.Background(), b.offsets, c.onCommitted)
	c.ready.Store(true)
	return nil
}

// flush waits until every batch handed to the committer is durable, and
// returns the committer's error, if any.
func (c *Consumer) flush() error {
	c.commits.Wait()
	if err := c.commitErr.Load(); err != nil {
		return *err
	}
	return nil
}

// setDurable records the offsets of a batch that is now durable.
func (c *Consumer) setDurable(offs map[string]map[int32]kgo.EpochOffset) {
	c.durableMu.Lock()
	defer c.durableMu.Unlock()
	if c.durable == nil {
		c.durable = map[string]map[int32]kgo.EpochOffset{}
	}
	for t, ps := range offs {
		if c.durable[t] == nil {
			c.durable[t] = map[int32]kgo.EpochOffset{}
		}
		for p, o := range ps {
			c.durable[t][p] = o
		}
	}
}

// durableOffsets returns a copy of the offsets of the durable batches, per
// partition still owned.
func (c *Consumer) durableOffsets() map[string]map[int32]kgo.EpochOffset {
	c.durableMu.Lock()
	defer c.durableMu.Unlock()
	out := make(map[string]map[int32]kgo.EpochOffset, len(c.durable))
	for t, ps := range c.durable {
		out[t] = make(map[int32]kgo.EpochOffset, len(ps))
		for p, o := range ps {
			out[t][p] = o
		}
	}
	return out
}

// forgetDurable drops the offsets of partitions this member no longer owns,
// so a later revoke never commits them over their new owner's.
func (c *Consumer) forgetDurable(tps map[string][]int32) {
	c.durableMu.Lock()
	defer c.durableMu.Unlock()
	for t, ps := range tps {
		for _, p := range ps {
			delete(c.durable[t], p)
		}
	}
}

func (c *Consumer) onCommitted(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		c.log.Warn("commit offsets", zap.Error(err))
	}
}
