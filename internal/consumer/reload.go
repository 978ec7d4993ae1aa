package consumer

// Rule reload between batches, and the periodic co-partitioning re-check.

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/rules"
)

// SetRules swaps in a new rule set between batches. Every batch's state is
// durable before the next begins, so the engines are simply dropped and
// rebuilt from Badger under the new rules on the next batch. Topics the new
// rules add are subscribed to; topics they no longer read stay subscribed
// until restart (their records are ignored).
func (c *Consumer) SetRules(ctx context.Context, rs *rules.RuleSet) error {
	topics := topicsOf(rs)
	details, err := c.adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	if err := CheckCoPartitioned(rs, details); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The engines are rebuilt from Badger: everything they did must be there.
	if err := c.flush(); err != nil {
		return err
	}
	var added []string
	known := map[string]bool{}
	for _, t := range c.topics {
		known[t] = true
	}
	for _, t := range topics {
		if !known[t] {
			added = append(added, t)
		}
	}
	c.rs, c.topics = rs, topics
	// Partitions held for a schema were rewound to their record: resuming
	// them reads it again under the new rules.
	resume := map[string][]int32{}
	for _, p := range c.parts {
		for t := range p.waiting {
			resume[t] = append(resume[t], p.id)
		}
	}
	c.cl.ResumeFetchPartitions(resume)
	for _, p := range c.parts {
		p.eng.Close()
	}
	c.parts = map[int32]*partition{}
	c.countWaiting()
	c.endsAt = time.Time{}
	if len(added) > 0 {
		c.cl.AddConsumeTopics(added...)
	}
	return nil
}

// recheckTopics repeats the co-partitioning check every 30s: partitions
// added to one topic at run time would silently stop its events from
// meeting the others', so the monitor stops with the reason instead.
func (c *Consumer) recheckTopics(now time.Time) error {
	if now.Sub(c.topicsCheckedAt) < 30*time.Second {
		return nil
	}
	c.topicsCheckedAt = now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	details, err := c.adm.ListTopics(ctx, c.topics...)
	if err != nil {
		c.log.Warn("describe topics", zap.Error(err))
		return nil
	}
	return CheckCoPartitioned(c.rs, details)
}
