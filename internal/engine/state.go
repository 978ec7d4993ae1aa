package engine

import (
	"encoding/binary"
	"slices"

	"github.com/invmon/invmon/internal/violation"
	"time"
)

// Op is one change to a partition's durable state.
type Op struct {
	Value  []byte
	Delete bool
}

// Delta is every durable change a partition made since the last TakeDelta:
// the state writes that must land in one synced batch with the applied
// offsets before the Kafka offsets are committed.
type Delta struct {
	// Ops maps a state key (inside the partition's namespace) to its change.
	Ops map[string]Op
	// Changed lists violations that opened or resolved, in order, for the
	// alerting side and the violation API once the delta is durable.
	Changed []violation.Violation
}

// Empty reports whether the delta holds no change.
func (d *Delta) Empty() bool { return len(d.Ops) == 0 && len(d.Changed) == 0 }

// Snapshot reads a partition's durable state when the partition is loaded.
// joinstate implements it over Badger; engine tests use MemSnapshot.
type Snapshot interface {
	// Scan calls fn for every key with the prefix, in key order. Key and value
	// are only valid during the call.
	Scan(prefix string, fn func(key string, value []byte) error) error
}

// MemSnapshot is a Snapshot held in memory: the state of a partition built by
// applying deltas, for tests and for tools that replay without Badger.
type MemSnapshot map[string][]byte

// Apply merges a delta into the snapshot.
func (m MemSnapshot) Apply(d *Delta) {
	for k, op := range d.Ops {
		if op.Delete {
			delete(m, k)
		} else {
			m[k] = append([]byte(nil), op.Value...)
		}
	}
}

// Scan implements Snapshot, in key order like Badger's iterator.
func (m MemSnapshot) Scan(prefix string, fn func(key string, value []byte) error) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(k, m[k]); err != nil {
			return err
		}
	}
	return nil
}

// Key layout inside one partition's namespace. Times are big-endian unix
// nanoseconds (offset so that they sort as unsigned), so a prefix scan
// returns deadlines in time order: "what is due up to W" is a range scan.
const (
	prefixRule      = "r/" // r/<rule>/d/<deadline>/<joinkey>\x00<eventid> and r/<rule>/s/<time>/<joinkey>
	prefixViolation = "v/" // v/<violation id>
	prefixStream    = "w/" // w/<stream>: newest event time seen
	prefixTable     = "t/" // t/<stream>/<key>: latest event of an entity
)

func timeBytes(t time.Time) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(t.UnixNano())^(1<<63))
	return b[:]
}

func bytesTime(b []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(b)^(1<<63))).UTC()
}

func deadlineKey(rule string, deadline time.Time, joinKey, eventID string) string {
	return prefixRule + rule + "/d/" + string(timeBytes(deadline)) + joinKey + "\x00" + eventID
}

func seenKey(rule string, t time.Time, joinKey string) string {
	return prefixRule + rule + "/s/" + string(timeBytes(t)) + joinKey
}
