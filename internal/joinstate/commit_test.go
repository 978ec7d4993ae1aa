package joinstate

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/invmon/invmon/internal/engine"
)

// TestCommitStoresEachKeyOnceSplitAndOwnsWhatItStored commits deltas of two
// partitions too large for one Badger transaction (the smallest cache makes
// the transaction limit small), so the commit is split while the stored
// keys share one buffer and the writes one slice (see Commit). Every key
// must then read back with its own value, deletes must land, and changing
// the delta's values after Commit returns must change nothing stored:
// Badger keeps the slices only until the transaction ends.
func TestCommitStoresEachKeyOnceSplitAndOwnsWhatItStored(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CacheSize: MinCacheSize}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 20000
	value := func(p, i int) []byte { return fmt.Appendf(nil, "value %d of %d %0100d", i, p, i) }
	deltas := []PartitionDelta{}
	for p := range 2 {
		ops := map[string]engine.Op{}
		for i := range n {
			ops[fmt.Sprintf("r/rule/k/%06d", i)] = engine.Op{Value: value(p, i)}
		}
		deltas = append(deltas, PartitionDelta{Partition: int32(p), Delta: &engine.Delta{Ops: ops}, Offsets: map[string]int64{"payments": 9}})
	}
	if err := s.Commit(deltas...); err != nil {
		t.Fatal(err)
	}
	for _, pd := range deltas {
		for _, op := range pd.Delta.Ops {
			for i := range op.Value {
				op.Value[i] = 'X'
			}
		}
	}
	// Delete every other key of partition 1 in a second commit.
	dels := map[string]engine.Op{}
	for i := 0; i < n; i += 2 {
		dels[fmt.Sprintf("r/rule/k/%06d", i)] = engine.Op{Delete: true}
	}
	if err := s.Commit(PartitionDelta{Partition: 1, Delta: &engine.Delta{Ops: dels}}); err != nil {
		t.Fatal(err)
	}
	for p := range 2 {
		snap := s.Snapshot(int32(p))
		seen := 0
		err := engine.ScanPrefix(snap, "r/rule/k/", func(k string, v []byte) error {
			var i int
			if _, err := fmt.Sscanf(k, "r/rule/k/%06d", &i); err != nil {
				return err
			}
			if p == 1 && i%2 == 0 {
				return fmt.Errorf("deleted key %q is still there", k)
			}
			if want := value(p, i); !bytes.Equal(v, want) {
				return fmt.Errorf("partition %d key %q = %q, want %q", p, k, v, want)
			}
			seen++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := n - p*n/2; seen != want {
			t.Fatalf("partition %d holds %d keys, want %d", p, seen, want)
		}
		if off, err := s.AppliedOffset("payments", int32(p)); err != nil || off != 9 {
			t.Fatalf("partition %d applied offset %d, %v", p, off, err)
		}
	}
}
