package engine

import (
	"encoding/binary"
	"slices"
	"strings"
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
	for prefix, floor := range p.floors {
		if key < floor && strings.HasPrefix(key, prefix) {
			p.floors[prefix] = key
		}
	}
	fresh := absent
	if op, ok := p.delta.Ops[key]; ok {
		fresh = op.fresh
	}
	p.delta.set(key, Op{Value: value, fresh: fresh})
}

// del records a durable delete.
func (p *Partition) del(key string) {
	if op, ok := p.delta.Ops[key]; ok && op.fresh {
		delete(p.delta.Ops, key)
		return
	}
	p.delta.set(key, Op{Delete: true})
}

// scan calls fn for every live key in [start, end) in key order, across all
// layers; fn returns false to stop. fn may write state: the iteration sees
// the state as it was when the scan began.
func (p *Partition) scan(start, end string, fn func(key string, value []byte) bool) {
	var over map[string]Op
	for _, d := range append(slices.Clip(p.inflight), p.delta) {
		d.rangeOps(start, end, func(k string, op Op) {
			if over == nil {
				over = map[string]Op{}
			}
			over[k] = op
		})
	}
	keys := make([]string, 0, len(over))
	for k := range over {
		keys = append(keys, k)
	}
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

// scanDue is scan over a time-ordered range from prefix to end that is
// visited again and again (deadlines, expiry). It starts where the last
// complete scan ended, or lower where a key was written since: below that
// every key was deleted by the scans themselves, and an LSM store would
// otherwise walk their tombstones every time.
func (p *Partition) scanDue(prefix, end string, fn func(key string, value []byte) bool) {
	start := prefix
	if f := p.floors[prefix]; f > start {
		start = f
	}
	if end <= start {
		return
	}
	if p.floors == nil {
		p.floors = map[string]string{}
	}
	// Tentatively done up to end; a write below it during the scan, or a
	// scan that stops early, lowers the floor again.
	p.floors[prefix] = end
	completed := true
	p.scan(start, end, func(k string, v []byte) bool {
		if !fn(k, v) {
			completed = false
			return false
		}
		return true
	})
	if (!completed || p.err != nil) && start < p.floors[prefix] {
		p.floors[prefix] = start
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
