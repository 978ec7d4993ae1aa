package replay

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/invmon/invmon/internal/engine"
)

// The replay's own bookkeeping for one partition number lives in the same
// Badger namespace as the engine's state, under the key type "x/" that the
// engine does not use, and is written as part of the engine's delta: the
// counters, the clock and the offsets of a checkpoint can never disagree,
// whatever moment the process dies at.
const (
	keyClock   = "x/c"  // x/c → the partition's event-time clock
	keyRead    = "x/n/" // x/n/<topic> → records applied from the topic-partition
	keyFailed  = "x/f/" // x/f/<topic> → why the topic-partition is not covered
	keyEntity  = "x/k/" // x/k/<rule>\x00<key> → an entity checked in the window
	keyDead    = "x/d/" // x/d/<topic>\x00<reason> → records rejected
	keyExample = "x/e/" // x/e/<topic>\x00<reason>\x00<offset, 20 digits> → the error
)

// maxExamples bounds the rejected records kept per topic-partition and reason.
const maxExamples = 5

type deadKey struct{ topic, reason string }

// book is one partition number's bookkeeping: the durable totals and what
// changed since the last checkpoint.
type book struct {
	clock  time.Time
	read   map[string]int64
	failed map[string]string
	dead   map[deadKey]int64
	// examples counts the examples kept per deadKey (durable or not).
	examples map[deadKey]int
	// Since the last checkpoint.
	newEntities map[string]struct{}
	newExamples map[string]string
}

// load reads the partition's bookkeeping, or starts an empty one.
func (b *book) load(snap engine.Snapshot) error {
	b.read, b.failed, b.dead, b.examples = map[string]int64{}, map[string]string{}, map[deadKey]int64{}, map[deadKey]int{}
	b.newEntities, b.newExamples = map[string]struct{}{}, map[string]string{}
	return engine.ScanPrefix(snap, "x/", func(key string, v []byte) error {
		switch {
		case key == keyClock:
			if len(v) != 8 {
				return fmt.Errorf("corrupt replay clock")
			}
			b.clock = time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
		case strings.HasPrefix(key, keyRead):
			if len(v) != 8 {
				return fmt.Errorf("corrupt record count %q", key)
			}
			b.read[key[len(keyRead):]] = int64(binary.BigEndian.Uint64(v))
		case strings.HasPrefix(key, keyFailed):
			b.failed[key[len(keyFailed):]] = string(v)
		case strings.HasPrefix(key, keyDead):
			topic, reason, _ := strings.Cut(key[len(keyDead):], "\x00")
			if len(v) != 8 {
				return fmt.Errorf("corrupt rejected count %q", key)
			}
			b.dead[deadKey{topic, reason}] = int64(binary.BigEndian.Uint64(v))
		case strings.HasPrefix(key, keyExample):
			parts := strings.SplitN(key[len(keyExample):], "\x00", 3)
			if len(parts) == 3 {
				b.examples[deadKey{parts[0], parts[1]}]++
			}
		}
		return nil
	})
}

// entity records that rule checked key in the window.
func (b *book) entity(rule, key string) {
	b.newEntities[rule+"\x00"+key] = struct{}{}
}

// deadLetter counts a rejected record and keeps the first few as examples.
func (b *book) deadLetter(topic, reason string, offset int64, msg string) {
	k := deadKey{topic, reason}
	b.dead[k]++
	if b.examples[k] < maxExamples {
		b.examples[k]++
		b.newExamples[fmt.Sprintf("%s%s\x00%s\x00%020d", keyExample, topic, reason, offset)] = msg
	}
}

// write adds the bookkeeping to a delta: totals as they are now (so writing
// them twice is harmless) and what is new since the last checkpoint.
func (b *book) write(d *engine.Delta) {
	put := func(k string, v []byte) { d.Ops[k] = engine.Op{Value: v} }
	u64 := func(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }
	if !b.clock.IsZero() {
		put(keyClock, u64(b.clock.UnixNano()))
	}
	for t, n := range b.read {
		put(keyRead+t, u64(n))
	}
	for t, f := range b.failed {
		put(keyFailed+t, []byte(f))
	}
	for k, n := range b.dead {
		put(keyDead+k.topic+"\x00"+k.reason, u64(n))
	}
	for k := range b.newEntities {
		put(keyEntity+k, []byte{})
	}
	for k, msg := range b.newExamples {
		put(k, []byte(msg))
	}
}

// committed forgets what the last checkpoint made durable.
func (b *book) committed() {
	b.newEntities = map[string]struct{}{}
	b.newExamples = map[string]string{}
}

// scanEntities counts, per rule, the distinct entities checked on a
// partition.
func scanEntities(snap engine.Snapshot, counts map[string]int) error {
	return engine.ScanPrefix(snap, keyEntity, func(key string, _ []byte) error {
		rule, _, ok := strings.Cut(key[len(keyEntity):], "\x00")
		if ok {
			counts[rule]++
		}
		return nil
	})
}

// example is one rejected record kept for the report.
type example struct {
	topic, reason string
	offset        int64
	msg           string
}

// scanExamples returns the rejected records kept on a partition, in offset
// order per topic and reason.
func scanExamples(snap engine.Snapshot) ([]example, error) {
	var out []example
	err := engine.ScanPrefix(snap, keyExample, func(key string, v []byte) error {
		parts := strings.SplitN(key[len(keyExample):], "\x00", 3)
		if len(parts) != 3 {
			return nil
		}
		var off int64
		if _, err := fmt.Sscanf(parts[2], "%d", &off); err != nil {
			return fmt.Errorf("corrupt example key %q: %w", key, err)
		}
		out = append(out, example{topic: parts[0], reason: parts[1], offset: off, msg: string(v)})
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].offset < out[j].offset })
	return out, err
}
