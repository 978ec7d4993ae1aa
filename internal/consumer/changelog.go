package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkaconn"
)

// The changelog makes state move with its partition. Each batch's state
// writes, and the applied offsets, are appended to a compacted topic (one
// partition per input partition) before the batch is committed locally; a
// member that gains a partition restores it from there unless its own copy
// is current.

func (c *Consumer) changelogTopic() string { return c.changelogName }

// ensureChangelog creates the changelog topic, compacted, with as many
// partitions as the widest input topic.
func (c *Consumer) ensureChangelog(ctx context.Context, details kadm.TopicDetails) error {
	partitions := int32(1)
	for _, t := range c.topics {
		if d, ok := details[t]; ok && d.Err == nil {
			partitions = max(partitions, int32(len(d.Partitions)))
		}
	}
	_, err := kafkaconn.EnsureTopic(ctx, c.adm, c.changelogTopic(), partitions, kafkaconn.Compacted())
	return err
}

// changelogEnd returns the end offset of the changelog's partition id. The
// changelog may have fewer partitions than the inputs: it was created while
// the input topics, themselves just created, were not yet visible with all
// their partitions. Then it is grown to the inputs' count. A partition the
// brokers do not list yet (they learn of new partitions asynchronously) is
// retried for up to ten seconds.
func (c *Consumer) changelogEnd(ctx context.Context, id int32) (kadm.ListedOffset, error) {
	deadline := time.Now().Add(10 * time.Second)
	grown := false
	for {
		ends, err := c.adm.ListEndOffsets(ctx, c.changelogTopic())
		if err != nil {
			return kadm.ListedOffset{}, fmt.Errorf("changelog end offsets: %w", err)
		}
		end, ok := ends.Lookup(c.changelogTopic(), id)
		if ok && end.Err == nil {
			return end, nil
		}
		if !ok && !grown {
			grown = true
			if err := c.growChangelog(ctx, id+1); err != nil {
				return kadm.ListedOffset{}, err
			}
		}
		transient := !ok || errors.Is(end.Err, kerr.UnknownTopicOrPartition) || errors.Is(end.Err, kerr.NotLeaderForPartition) ||
			errors.Is(end.Err, kerr.LeaderNotAvailable)
		if !transient || time.Now().After(deadline) {
			if !ok {
				return kadm.ListedOffset{}, fmt.Errorf("changelog partition %d: not listed by the brokers", id)
			}
			return kadm.ListedOffset{}, fmt.Errorf("changelog partition %d: %w", id, end.Err)
		}
		select {
		case <-ctx.Done():
			return kadm.ListedOffset{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// growChangelog gives the changelog topic as many partitions as the widest
// input topic, and at least min.
func (c *Consumer) growChangelog(ctx context.Context, min int32) error {
	details, err := c.adm.ListTopics(ctx, append([]string{c.changelogTopic()}, c.topics...)...)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	want := min
	for _, t := range c.topics {
		if d, ok := details[t]; ok && d.Err == nil {
			want = max(want, int32(len(d.Partitions)))
		}
	}
	d, ok := details[c.changelogTopic()]
	if !ok || d.Err != nil || int32(len(d.Partitions)) >= want {
		return nil // not visible yet, or wide enough: the retry will tell
	}
	c.log.Warn("the changelog topic has fewer partitions than the inputs; adding them",
		zap.String("topic", c.changelogTopic()), zap.Int("partitions", len(d.Partitions)), zap.Int32("inputs", want))
	resp, err := c.adm.UpdatePartitions(ctx, int(want), c.changelogTopic())
	if err == nil {
		var r kadm.CreatePartitionsResponse
		if r, err = resp.On(c.changelogTopic(), nil); err == nil {
			err = r.Err
		}
	}
	if err != nil && !errors.Is(err, kerr.InvalidPartitions) {
		return fmt.Errorf("grow changelog topic %q to %d partitions: %w", c.changelogTopic(), want, err)
	}
	return nil
}

// changelogRecords renders one partition's delta and applied offsets.
//
// It allocates per call, not per record: the records are one slice and
// their keys one buffer. Ownership: the records, their keys and that buffer
// are new here and handed whole to the producer; nothing writes to them
// afterwards (the batch only reads a record's topic, partition and offset
// once it is acknowledged). A record's value is the delta's own op.Value,
// not a copy: the engine never modifies a value once it is put (engine.Op),
// franz-go only reads it, and Store.Commit hands the same slice to Badger,
// which only reads it too.
func (c *Consumer) changelogRecords(p int32, d *engine.Delta, offsets map[string]int64) []*kgo.Record {
	n, keyBytes := len(d.Ops)+len(offsets), 0
	for k := range d.Ops {
		keyBytes += len(k)
	}
	for t := range offsets {
		keyBytes += len(joinstate.ChangelogKeyPrefixOffset) + len(t)
	}
	recs := make([]kgo.Record, 0, n)
	keys := make([]byte, 0, keyBytes)
	key := func(parts ...string) []byte {
		start := len(keys)
		for _, s := range parts {
			keys = append(keys, s...)
		}
		return keys[start:len(keys):len(keys)]
	}
	for k, op := range d.Ops {
		r := kgo.Record{Topic: c.changelogName, Partition: p, Key: key(k)}
		if !op.Delete {
			// An empty value is a value, not a tombstone: keep it non-nil.
			r.Value = op.Value
			if r.Value == nil {
				r.Value = emptyValue
			}
		}
		recs = append(recs, r)
	}
	vals := make([]byte, 0, 8*len(offsets))
	for t, off := range offsets {
		vals = binary.BigEndian.AppendUint64(vals, uint64(off))
		recs = append(recs, kgo.Record{
			Topic: c.changelogName, Partition: p,
			Key:   key(joinstate.ChangelogKeyPrefixOffset, t),
			Value: vals[len(vals)-8 : len(vals) : len(vals)],
		})
	}
	out := make([]*kgo.Record, len(recs))
	for i := range recs {
		out[i] = &recs[i]
	}
	return out
}

// emptyValue is the value of a changelog record for a state entry whose
// value is empty: non-nil, so it is not a tombstone, and of capacity zero,
// so nothing can write into it.
var emptyValue = make([]byte, 0)

// restore rebuilds partition id from the changelog unless the local state
// already reflects the changelog's end.
func (c *Consumer) restore(ctx context.Context, id int32) error {
	end, err := c.changelogEnd(ctx, id)
	if err != nil {
		return err
	}
	local, err := c.store.ChangelogOffset(id)
	if err != nil {
		return err
	}
	switch {
	case end.Offset == 0:
		return nil // nothing was ever logged: the local state is all there is
	case local == end.Offset:
		c.log.Info("local state is current", zap.Int32("partition", id), zap.Int64("changelog_end", end.Offset))
		return nil
	}
	start := time.Now()
	c.restoring.Inc()
	defer c.restoring.Dec()
	n, entries, err := Restore(ctx, c.cfg.Brokers, c.cfg.Opts, c.changelogTopic(), id, end.Offset, c.store, c.topics, func(n int) { c.restored.Add(float64(n)) })
	if err != nil {
		return err
	}
	c.log.Info("restored partition from the changelog", zap.Int32("partition", id), zap.Int("records", n),
		zap.Int("state_entries", entries), zap.Duration("took", time.Since(start)))
	return nil
}

// Restore replaces the local state of partition with the changelog's first
// end records of that partition. progress, when set, is told how many
// records each fetch brought. It returns the records read and the state
// entries written.
func Restore(ctx context.Context, brokers []string, opts []kgo.Opt, topic string, partition int32, end int64,
	store *joinstate.Store, topics []string, progress func(int)) (records, entries int, err error) {
	if err := store.WipePartition(partition, topics); err != nil {
		return 0, 0, err
	}
	rd, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxBytes(64 << 20),
	}, opts...)...)
	if err != nil {
		return 0, 0, err
	}
	defer rd.Close()
	rs := store.NewRestorer(partition)
	for pos := int64(0); pos < end; {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			rs.Cancel()
			return 0, 0, err
		}
		for _, fe := range fs.Errors() {
			rs.Cancel()
			return 0, 0, fmt.Errorf("read changelog partition %d: %w", partition, fe.Err)
		}
		var addErr error
		fs.EachRecord(func(r *kgo.Record) {
			if addErr == nil && r.Offset < end {
				addErr = rs.Add(r.Key, r.Value)
				records++
			}
			pos = max(pos, r.Offset+1)
		})
		if addErr != nil {
			rs.Cancel()
			return 0, 0, addErr
		}
		if progress != nil {
			progress(len(fs.Records()))
		}
	}
	if err := rs.Finish(end); err != nil {
		return 0, 0, err
	}
	return records, rs.Entries, nil
}
