package engine

import (
	"slices"
	"testing"
)

// A range scan through the batch in hand, a delta in flight and the
// snapshot sees exactly the live keys in range, newest layer first, in key
// order: also for keys written, deleted in the same batch (never written) and
// written again, which stay in the delta's key index.
func TestScanThroughIndexedDeltas(t *testing.T) {
	snap := NewMemSnapshot()
	base := newDelta(0)
	base.set("r/a/1", Op{Value: []byte("snap1")}, false)
	base.set("r/a/4", Op{Value: []byte("snap4")}, false)
	base.set("r/b/1", Op{Value: []byte("other")}, false)
	snap.Apply(base)
	// r/a/ is a time-ordered prefix, indexed in the deltas; r/b/ is not, and
	// a scan over it reads the deltas in full.
	p := &Partition{snap: snap, delta: newDelta(0), ordered: []orderedPrefix{{prefix: "r/a/"}}}

	p.put("r/a/2", []byte("flight2"), true)
	p.del("r/a/4")
	p.inflight = append(p.inflight, p.delta)
	p.delta = newDelta(0)

	p.put("r/a/3", []byte("fresh"), true)
	p.del("r/a/3") // created and deleted in the batch: no write at all
	p.put("r/a/5", []byte("gone"), true)
	p.del("r/a/5")
	p.put("r/a/5", []byte("again"), true)
	p.put("r/a/1", []byte("batch1"), false)
	p.put("r/a/0", []byte("before the range"), true)
	p.put("r/b/2", []byte("point key"), true)

	if _, ok := p.delta.Ops["r/a/3"]; ok {
		t.Errorf("a key created and deleted in one batch is still written")
	}
	var got []string
	p.scan("r/a/1", "r/a/9", func(k string, v []byte) bool {
		got = append(got, k+"="+string(v))
		return true
	})
	want := []string{"r/a/1=batch1", "r/a/2=flight2", "r/a/5=again"}
	if !slices.Equal(got, want) {
		t.Fatalf("scan = %v, want %v", got, want)
	}
	got = got[:0]
	p.scan("r/a/", "", func(k string, v []byte) bool {
		got = append(got, k)
		return true
	})
	if want := []string{"r/a/0", "r/a/1", "r/a/2", "r/a/5", "r/b/1", "r/b/2"}; !slices.Equal(got, want) {
		t.Fatalf("open-ended scan = %v, want %v", got, want)
	}
}
