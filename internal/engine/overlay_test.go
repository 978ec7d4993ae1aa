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

// Scans reuse one overlay: a scan started inside another's callback, and
// scans one after the other, each see exactly their own range's keys, and
// a scan that stops early leaves nothing behind for the next.
func TestScansInsideScansAndOneAfterAnotherKeepTheirOverlays(t *testing.T) {
	snap := NewMemSnapshot()
	base := newDelta(0)
	base.set("r/a/1", Op{Value: []byte("a1")}, false)
	base.set("r/b/1", Op{Value: []byte("b1")}, false)
	snap.Apply(base)
	p := &Partition{snap: snap, delta: newDelta(0), ordered: []orderedPrefix{{prefix: "r/a/"}, {prefix: "r/b/"}}}
	p.put("r/a/2", []byte("a2"), true)
	p.put("r/b/2", []byte("b2"), true)
	p.del("r/b/1")

	collect := func(start, end string, stopAfter int) []string {
		var got []string
		p.scan(start, end, func(k string, v []byte) bool {
			got = append(got, k+"="+string(v))
			return len(got) != stopAfter
		})
		return got
	}
	var outer, inner []string
	p.scan("r/a/", "r/a/9", func(k string, v []byte) bool {
		outer = append(outer, k+"="+string(v))
		if inner == nil {
			inner = collect("r/b/", "r/b/9", 0)
		}
		return true
	})
	if want := []string{"r/a/1=a1", "r/a/2=a2"}; !slices.Equal(outer, want) {
		t.Fatalf("outer scan = %v, want %v", outer, want)
	}
	if want := []string{"r/b/2=b2"}; !slices.Equal(inner, want) {
		t.Fatalf("inner scan = %v, want %v", inner, want)
	}
	if got := collect("r/a/", "r/a/9", 1); !slices.Equal(got, []string{"r/a/1=a1"}) {
		t.Fatalf("stopped scan = %v", got)
	}
	if got, want := collect("r/b/", "r/b/9", 0), []string{"r/b/2=b2"}; !slices.Equal(got, want) {
		t.Fatalf("scan after a stopped one = %v, want %v", got, want)
	}
}
