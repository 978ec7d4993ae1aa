package engine

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/google/btree"

	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// Op is one change to a partition's durable state.
type Op struct {
	// Value is never modified once the op is recorded (every put hands
	// over a slice made for it), so its readers share it without a copy:
	// the partition's decoder, the changelog record, Badger's transaction.
	Value  []byte
	Delete bool
	// fresh marks a key written in this delta that exists nowhere below it:
	// deleting it again before the delta is taken needs no write at all.
	fresh bool
}

// Delta is every durable change a partition made since the last TakeDelta:
// the state writes that must land in one synced batch with the applied
// offsets before the Kafka offsets are committed.
//
// Until the caller marks it durable (MarkDurable, done by the Badger store's
// Commit and by MemSnapshot.Apply), the partition keeps reading through it:
// the state of a batch still on its way to disk is the newest state.
type Delta struct {
	// Ops maps a state key (inside the partition's namespace) to its change.
	Ops map[string]Op
	// Changed lists violations that opened or resolved, in order, for the
	// alerting side and the violation API once the delta is durable.
	Changed []violation.Violation

	// index holds, in order, the keys the partition wrote to Ops under its
	// time-ordered prefixes (the ones scanned again and again: deadlines,
	// buffers, expiries), so that such a range scan visits only the delta's
	// keys in its range instead of every key of every delta in flight (per
	// event, that was quadratic in the batch). Point keys (records,
	// entities, violations) are left out: indexing them cost a tenth of the
	// per-event path. It may hold keys since deleted from Ops; nil for a
	// delta not made by a partition, which a scan then reads in full.
	index *btree.BTreeG[string]

	durable atomic.Bool
	// recyclable is set by Recycle: the caller is done with the delta.
	recyclable atomic.Bool
}

// newDelta returns an empty delta with its key index.
func newDelta(capacity int) *Delta {
	return &Delta{Ops: make(map[string]Op, capacity), index: btree.NewOrderedG[string](32)}
}

// set records op for key in Ops, and in the key index when indexed.
func (d *Delta) set(key string, op Op, indexed bool) {
	if indexed && d.index != nil {
		if _, ok := d.Ops[key]; !ok {
			d.index.ReplaceOrInsert(key)
		}
	}
	d.Ops[key] = op
}

// rangeOps calls fn for every key of Ops in [start, end) (end "" for no
// upper bound), through the index when the delta has one and the range is
// one of the indexed prefixes'.
func (d *Delta) rangeOps(start, end string, indexed bool, fn func(key string, op Op)) {
	if d.index == nil || !indexed {
		for k, op := range d.Ops {
			if k >= start && (end == "" || k < end) {
				fn(k, op)
			}
		}
		return
	}
	visit := func(k string) bool {
		if op, ok := d.Ops[k]; ok {
			fn(k, op)
		}
		return true
	}
	if end == "" {
		d.index.AscendGreaterOrEqual(start, visit)
	} else {
		d.index.AscendRange(start, end, visit)
	}
}

// Empty reports whether the delta holds no change.
func (d *Delta) Empty() bool { return len(d.Ops) == 0 && len(d.Changed) == 0 }

// MarkDurable tells the partition that took d that d is in the state it
// reads (Snapshot), so it may stop reading through d.
func (d *Delta) MarkDurable() { d.durable.Store(true) }

// Recycle tells the partition that took d that its caller will not read d
// again: once d is durable too, the partition may reuse its map and index
// for a later delta, and d's Ops become nil. A batch's map then costs no
// allocation, nor the dozen copies of growing to the batch's size. Changed
// is left as it is. A caller that keeps deltas (tests, tools) simply never
// calls it.
func (d *Delta) Recycle() { d.recyclable.Store(true) }

// reuse returns an empty delta with the map and index of spare, a delta
// that is durable and recycled, or a new delta for capacity keys when
// spare is nil.
func reuse(spare *Delta, capacity int) *Delta {
	if spare == nil || spare.Ops == nil || spare.index == nil {
		return newDelta(capacity)
	}
	ops, index := spare.Ops, spare.index
	// A reader that ignored Recycle finds nothing rather than another
	// batch's changes.
	spare.Ops, spare.index = nil, nil
	clear(ops)
	index.Clear(true)
	return &Delta{Ops: ops, index: index}
}

// Snapshot is a partition's durable state as the engine reads it: a sorted
// key-value store (Kafka Streams' KeyValueStore is the model). joinstate
// implements it over Badger; engine tests use MemSnapshot. Keys are inside
// the partition's namespace. A Snapshot must reflect every delta marked
// durable before the read.
type Snapshot interface {
	// Get returns the value of key, and whether it exists. The value is the
	// caller's to keep.
	Get(key string) ([]byte, bool, error)
	// Scan calls fn for every key in [start, end) in key order; an empty end
	// means no upper bound. fn returns false to stop. Key and value are only
	// valid during the call.
	Scan(start, end string, fn func(key string, value []byte) bool) error
}

// ViewSnapshot is a Snapshot that serves reads from one consistent view
// (Badger: one read transaction) until Release: the partition releases it
// once per batch, in TakeDelta and Close, instead of paying a transaction
// per read. A view opened after Release reflects every delta marked durable
// before it; deltas that become durable later are still read through the
// partition's in-flight deltas until the next TakeDelta drops them.
type ViewSnapshot interface {
	Snapshot
	// Release ends the current view; the next read opens a new one.
	Release()
}

// LastKeySnapshot is a Snapshot that finds the last key of a range with one
// seek (Badger: a reverse iterator) instead of walking the range.
type LastKeySnapshot interface {
	Snapshot
	// LastKey returns the greatest key in [start, end), and whether there
	// is one; an empty end means no upper bound.
	LastKey(start, end string) (string, bool, error)
}

// lastKey returns the greatest key of snap in [start, end), and whether
// there is one: one seek when snap is a LastKeySnapshot, else a scan.
func lastKey(snap Snapshot, start, end string) (string, bool, error) {
	if l, ok := snap.(LastKeySnapshot); ok {
		return l.LastKey(start, end)
	}
	var last string
	found := false
	err := snap.Scan(start, end, func(k string, _ []byte) bool {
		last, found = strings.Clone(k), true
		return true
	})
	return last, found, err
}

// ScanPrefix calls fn for every key of snap with prefix, in key order, and
// returns the first error fn or the scan returns.
func ScanPrefix(snap Snapshot, prefix string, fn func(key string, value []byte) error) error {
	var ferr error
	err := snap.Scan(prefix, statekey.PrefixEnd(prefix), func(k string, v []byte) bool {
		ferr = fn(k, v)
		return ferr == nil
	})
	if ferr != nil {
		return ferr
	}
	return err
}

// MemSnapshot is a Snapshot held in memory: the state of a partition built by
// applying deltas, for tests and for tools that replay without Badger. Its
// keys are kept in a B-tree, so a range scan costs the range and applying a
// delta costs its keys, like Badger's (a sorted slice cost a copy of every
// later key per insert: quadratic in the state).
type MemSnapshot struct {
	m    map[string][]byte
	keys *btree.BTreeG[string]
}

// NewMemSnapshot returns an empty snapshot.
func NewMemSnapshot() *MemSnapshot {
	return &MemSnapshot{m: map[string][]byte{}, keys: btree.NewOrderedG[string](32)}
}

// Len returns how many keys the snapshot holds.
func (m *MemSnapshot) Len() int { return len(m.m) }

// Apply merges a delta into the snapshot and marks it durable.
func (m *MemSnapshot) Apply(d *Delta) {
	for k, op := range d.Ops {
		_, had := m.m[k]
		switch {
		case op.Delete && had:
			delete(m.m, k)
			m.keys.Delete(k)
		case !op.Delete:
			if !had {
				m.keys.ReplaceOrInsert(k)
			}
			m.m[k] = append([]byte(nil), op.Value...)
		}
	}
	d.MarkDurable()
}

// Get implements Snapshot.
func (m *MemSnapshot) Get(key string) ([]byte, bool, error) {
	v, ok := m.m[key]
	return append([]byte(nil), v...), ok, nil
}

// Scan implements Snapshot, in key order like Badger's iterator.
func (m *MemSnapshot) Scan(start, end string, fn func(key string, value []byte) bool) error {
	visit := func(k string) bool { return fn(k, m.m[k]) }
	if end == "" {
		m.keys.AscendGreaterOrEqual(start, visit)
	} else {
		m.keys.AscendRange(start, end, visit)
	}
	return nil
}

// LastKey implements LastKeySnapshot.
func (m *MemSnapshot) LastKey(start, end string) (string, bool, error) {
	var last string
	found := false
	visit := func(k string) bool {
		if k < start {
			return false
		}
		last, found = k, true
		return false
	}
	if end == "" {
		m.keys.Descend(visit)
	} else {
		m.keys.DescendLessOrEqual(end, func(k string) bool {
			if k == end {
				return true
			}
			return visit(k)
		})
	}
	return last, found, nil
}

// StateFormat is the version of the key layout (package statekey) and of the
// value encoding below. A state directory written in another format is
// refused by joinstate.Open. Format 3: an absence rule keeps one record per
// join key (k/<key>) instead of three keys (p/, S/, o/). Format 4: a rule's
// keys start with its fixed-length id (statekey.RuleID), not its name.
const StateFormat = 4

// errCorrupt is returned for a stored value that does not decode.
var errCorrupt = errors.New("corrupt state value")

// enc appends the compact binary encoding of state values: uvarint-prefixed
// strings, fixed 8-byte times and floats. It is several times cheaper than
// JSON on the per-event path and a third of its size on disk.
type enc []byte

func (e enc) str(s string) enc {
	return append(binary.AppendUvarint(e, uint64(len(s))), s...)
}
func (e enc) bytes(b []byte) enc {
	return append(binary.AppendUvarint(e, uint64(len(b))), b...)
}
func (e enc) time(t time.Time) enc { return append(e, statekey.TimeBytes(t)...) }
func (e enc) f64(f float64) enc    { return binary.BigEndian.AppendUint64(e, math.Float64bits(f)) }
func (e enc) i64(i int64) enc      { return binary.AppendVarint(e, i) }
func (e enc) flag(b bool) enc {
	if b {
		return append(e, 1)
	}
	return append(e, 0)
}

// dec reads what enc wrote; the first failure sticks in err.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail() { d.err, d.b = errCorrupt, nil }

func (d *dec) raw() []byte {
	n, k := binary.Uvarint(d.b)
	if k <= 0 || uint64(len(d.b)-k) < n {
		d.fail()
		return nil
	}
	out := d.b[k : k+int(n)]
	d.b = d.b[k+int(n):]
	return out
}

// str returns the next string without copying it: it shares the value's
// bytes. A dec reads only values that are never modified after they are
// written (Partition.get's and a delta's); a value a scan lends for the
// duration of its callback is cloned before it is decoded.
func (d *dec) str() string {
	b := d.raw()
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
func (d *dec) bytes() []byte { return d.raw() }
func (d *dec) time() time.Time {
	if len(d.b) < 8 {
		d.fail()
		return time.Time{}
	}
	t := statekey.Time(d.b[:8])
	d.b = d.b[8:]
	return t
}
func (d *dec) f64() float64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	f := math.Float64frombits(binary.BigEndian.Uint64(d.b))
	d.b = d.b[8:]
	return f
}
func (d *dec) i64() int64 {
	v, k := binary.Varint(d.b)
	if k <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[k:]
	return v
}
func (d *dec) flag() bool {
	if len(d.b) < 1 {
		d.fail()
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

// more reports whether values are left and nothing failed.
func (d *dec) more() bool { return d.err == nil && len(d.b) > 0 }

// triggerSize bounds the encoded size of t, so that an encoder is sized
// once instead of growing field by field.
func triggerSize(t *trigger) int {
	return len(t.Key) + len(t.EventID) + len(t.Customer) + len(t.Source.Topic) + 4*binary.MaxVarintLen32 + 16 + 2*binary.MaxVarintLen64
}

func (e enc) trigger(t *trigger) enc {
	return e.str(t.Key).str(t.EventID).time(t.EventTime).f64(t.Impact).str(t.Customer).
		str(t.Source.Topic).i64(int64(t.Source.Partition)).i64(t.Source.Offset)
}

func (d *dec) trigger() trigger {
	var t trigger
	t.Key, t.EventID, t.EventTime, t.Impact, t.Customer = d.str(), d.str(), d.time(), d.f64(), d.str()
	t.Source.Topic, t.Source.Partition, t.Source.Offset = d.str(), int32(d.i64()), d.i64()
	return t
}
