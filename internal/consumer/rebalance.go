package consumer

// Rebalance callbacks: what happens when this member gains, gives up or
// loses partitions, and how a gained partition's engine is loaded.

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/engine"
)

func (c *Consumer) onAssigned(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range tps {
		if c.assigned[t] == nil {
			c.assigned[t] = map[int32]bool{}
		}
		for _, p := range ps {
			c.assigned[t][p] = true
		}
	}
	c.log.Info("partitions assigned", zap.Any("partitions", tps))
}

// onRevoked commits and drops the revoked partitions' engines. The poll
// loop allows a rebalance while its last batches may still be on their way
// to durability in the committer, so onRevoked first waits for them, then
// commits, synchronously, the offsets of durable batches only. franz-go
// calls it on Close too.
func (c *Consumer) onRevoked(ctx context.Context, cl *kgo.Client, tps map[string][]int32) {
	// Everything evaluated must be durable (and in the changelog) before the
	// next owner restores it; then a blocking commit, so it starts after it.
	// Only offsets of durable batches are committed: what was polled but
	// not made durable (a failed batch, an error before it was queued) must
	// be read again by whoever owns the partition next.
	if err := c.flush(); err != nil {
		c.log.Error("batch not durable; committing no offset past the last durable batch", zap.Error(err))
	} else if offs := c.durableOffsets(); len(offs) > 0 {
		cl.CommitOffsetsSync(ctx, offs, c.onCommitted)
	}
	c.drop(tps)
	c.log.Info("partitions revoked", zap.Any("partitions", tps))
}

// onLost drops the partitions without committing: another member may
// already own them.
func (c *Consumer) onLost(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	c.drop(tps)
	c.log.Warn("partitions lost", zap.Any("partitions", tps))
}

func (c *Consumer) drop(tps map[string][]int32) {
	c.forgetDurable(tps)
	c.mu.Lock()
	defer c.mu.Unlock()
	resume := map[string][]int32{}
	for t, ps := range tps {
		for _, p := range ps {
			delete(c.assigned[t], p)
			if part := c.parts[p]; part != nil && part.waiting[t] != nil {
				// Paused fetching outlives the assignment: undo it, so the
				// partition is read when it comes back.
				resume[t] = append(resume[t], p)
			}
			// The engine holds state read from Badger; when the partition comes
			// back it must be reloaded, since another member may have moved it on.
			if part := c.parts[p]; part != nil {
				part.eng.Close()
			}
			delete(c.parts, p)
		}
	}
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
	c.countWaiting()
}

// loadAssigned creates an engine, from durable state, for every newly
// assigned partition number, so that deadlines restored from state fire even
// if the partition never receives another record.
func (c *Consumer) loadAssigned(now time.Time) error {
	for _, ps := range c.assigned {
		for id := range ps {
			if c.parts[id] != nil {
				continue
			}
			// A batch of this partition from before it was lost (onLost
			// drops it without waiting) may still be on its way to Badger.
			// The new engine must read the state after it: over the state
			// without it, it would evaluate that batch's records again at
			// another clock, and both evaluations would land.
			if err := c.flush(); err != nil {
				return err
			}
			if c.cfg.Changelog {
				c.ready.Store(false)
				if err := c.restore(context.Background(), id); err != nil {
					return fmt.Errorf("restore partition %d: %w", id, err)
				}
			}
			eng, err := c.newEngine(id, now)
			if err != nil {
				return err
			}
			p := &partition{id: id, eng: eng, applied: map[string]int64{}, next: map[string]int64{}, batch: map[string]int64{}}
			for _, t := range c.topics {
				off, err := c.store.AppliedOffset(t, id)
				if err != nil {
					return fmt.Errorf("applied offset %s[%d]: %w", t, id, err)
				}
				p.applied[t] = off
			}
			c.parts[id] = p
			c.endsAt = time.Time{} // learn the new partitions' ends now
		}
	}
	return nil
}

// newEngine loads partition id's engine from its durable state.
func (c *Consumer) newEngine(id int32, now time.Time) (*engine.Partition, error) {
	eng, err := engine.NewPartition(id, c.rs, c.store.Snapshot(id), c.metrics, c.log, now)
	if err != nil {
		return nil, err
	}
	eng.SetTimeBounds(c.cfg.TimeBounds)
	eng.SetViolationRetention(c.cfg.ViolationRetention)
	return eng, nil
}
