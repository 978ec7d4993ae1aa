package engine

import (
	"encoding/binary"
	"slices"
	"strings"

	"github.com/invmon/invmon/internal/statekey"
)

// The partition reads state through three layers, newest first: the delta
// of the batch in hand (read-your-writes), the deltas taken but not yet
// durable, and the durable Snapshot. Nothing else holds per-entity state:
// memory is the batch in flight plus the store's own bounded caches.

// get returns the value of key and whether it exists. The value must not be
// modified.
func (p *Partition) get(key string) ([]byte, bool) {
	if op, ok := p.delta.Ops[key]; ok {
		return op.Value, !op.Delete
	}
	for i := len(p.inflight) - 1; i >= 0; i-- {
		if op, ok := p.inflight[i].Ops[key]; ok {
			return op.Value, !op.Delete
		}
	}
	if p.snap == nil {
		return nil, false
	}
	v, ok, err := p.snap.Get(key)
	if err != nil {
		p.fail(err)
		return nil, false
	}
	return v, ok
}

// put records a durable write. absent says the caller knows key exists in
// no layer (it just read it, or the key names a new item): deleting it
// again within this batch then costs no write at all, so a payment and its
// ledger entry seen in the same poll never touch the disk.
func (p *Partition) put(key string, value []byte, absent bool) {
	o := p.orderedOf(key)
	if o != nil && key < o.floor {
		o.floor = key
	}
	fresh := absent
	if op, ok := p.delta.Ops[key]; ok {
		fresh = op.fresh
	}
	p.delta.set(key, Op{Value: value, fresh: fresh}, o != nil)
}

// del records a durable delete.
func (p *Partition) del(key string) {
	if op, ok := p.delta.Ops[key]; ok && op.fresh {
		delete(p.delta.Ops, key)
		return
	}
	p.delta.set(key, Op{Delete: true}, p.orderedOf(key) != nil)
}

// orderedPrefix is a time-ordered prefix and where its next due scan
// starts ("" until the first).
type orderedPrefix struct{ prefix, floor string }

// orderedOf returns the time-ordered prefix key is under, or nil.
func (p *Partition) orderedOf(key string) *orderedPrefix {
	for i := range p.ordered {
		if strings.HasPrefix(key, p.ordered[i].prefix) {
			return &p.ordered[i]
		}
	}
	return nil
}

// scan calls fn for every live key in [start, end) in key order, across all
// layers; fn returns false to stop. fn may write state: the iteration sees
// the state as it was when the scan began.
func (p *Partition) scan(start, end string, fn func(key string, value []byte) bool) {
	// The overlay's map and key list are the partition's, reused scan after
	// scan (they were an allocation and a dozen growths per due scan); a
	// scan started from inside another's fn gets its own.
	sc := &p.scanScratch
	if sc.busy {
		sc = &scanScratch{}
	}
	sc.busy = true
	defer sc.reset()
	if sc.over == nil {
		sc.over = map[string]Op{}
	}
	over := sc.over
	// Deltas index only the keys of time-ordered prefixes; any other range
	// (all violations, for tools) reads their keys in full.
	o := p.orderedOf(start)
	indexed := o != nil && end != "" && end <= statekey.PrefixEnd(o.prefix)
	for _, d := range p.inflight {
		d.rangeOps(start, end, indexed, func(k string, op Op) { over[k] = op })
	}
	p.delta.rangeOps(start, end, indexed, func(k string, op Op) { over[k] = op })
	keys := sc.keys[:0]
	for k := range over {
		keys = append(keys, k)
	}
	sc.keys = keys
	slices.Sort(keys)
	i, stopped := 0, false
	// emit hands fn the overlay keys before k (all of them when k is "").
	emit := func(k string, all bool) bool {
		for i < len(keys) && (all || keys[i] < k) {
			op := over[keys[i]]
			i++
			if !op.Delete && !fn(keys[i-1], op.Value) {
				return false
			}
		}
		return true
	}
	if p.snap != nil {
		err := p.snap.Scan(start, end, func(k string, v []byte) bool {
			if !emit(k, false) {
				stopped = true
				return false
			}
			if i < len(keys) && keys[i] == k {
				op := over[k]
				i++
				if op.Delete {
					return true
				}
				v = op.Value
			}
			if !fn(k, v) {
				stopped = true
				return false
			}
			return true
		})
		if err != nil {
			p.fail(err)
			return
		}
	}
	if !stopped {
		emit("", true)
	}
}

// scanScratch is the overlay a scan builds: the newest op of every delta
// key in its range, and those keys in order.
type scanScratch struct {
	over map[string]Op
	keys []string
	busy bool
}

// reset empties the scratch for the next scan, keeping its room.
func (sc *scanScratch) reset() {
	clear(sc.over)
	clear(sc.keys) // drop the strings, keep the room
	sc.keys = sc.keys[:0]
	sc.busy = false
}

// scanDue is scan over a time-ordered range from prefix to end that is
// visited again and again (deadlines, expiry). It starts where the last
// complete scan ended, or lower where a key was written since: below that
// every key was deleted by the scans themselves, and an LSM store would
// otherwise walk their tombstones every time.
func (p *Partition) scanDue(prefix, end string, fn func(key string, value []byte) bool) {
	o := p.orderedOf(prefix)
	if o == nil || o.prefix != prefix {
		// Not a declared due prefix (see evaluator.duePrefixes): no floor.
		p.scan(prefix, end, fn)
		return
	}
	start := prefix
	if o.floor > start {
		start = o.floor
	}
	if end <= start {
		return
	}
	// Tentatively done up to end; a write below it during the scan, or a
	// scan that stops early, lowers the floor again.
	o.floor = end
	completed := true
	p.scan(start, end, func(k string, v []byte) bool {
		if !fn(k, v) {
			completed = false
			return false
		}
		return true
	})
	if (!completed || p.err != nil) && start < o.floor {
		o.floor = start
	}
}

// fail records the first state read error. The partition's work since the
// last durable batch cannot be trusted after one; the caller stops (Err).
func (p *Partition) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

// Err returns the first error reading state, if any. After one, the
// partition must be dropped and nothing it produced since committed.
func (p *Partition) Err() error { return p.err }

// counter is a count kept in state (pending expectations, live entries),
// so a gauge is right after a restart without reading what it counts.
type counter struct {
	key   string
	n     int64
	dirty bool
}

func (p *Partition) newCounter(key string) *counter {
	c := &counter{key: key}
	if v, ok := p.get(key); ok {
		n, k := binary.Varint(v)
		if k > 0 {
			c.n = n
		}
	}
	p.counters = append(p.counters, c)
	return c
}

func (c *counter) add(d int64) {
	if d != 0 {
		c.n += d
		c.dirty = true
	}
}
