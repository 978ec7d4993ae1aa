package joinstate

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/invmon/invmon/internal/engine"
)

// A process killed between creating a log file and writing its header
// leaves a zero-length .mem or .vlog; the state directory still opens, with
// everything committed before.
func TestStateOpensAfterAKillLeftAnEmptyLogFile(t *testing.T) {
	for _, name := range []string{"00099.mem", "000099.vlog"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{CacheSize: MinCacheSize}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(PartitionDelta{Partition: 0, Delta: &engine.Delta{Ops: map[string]engine.Op{"r/a/1": {Value: []byte("kept")}}}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			s, err = Open(dir, Options{CacheSize: MinCacheSize}, nil)
			if err != nil {
				t.Fatalf("open after an empty %s was left: %v", name, err)
			}
			defer s.Close()
			snap := s.Snapshot(0)
			if r, ok := snap.(interface{ Release() }); ok {
				defer r.Release()
			}
			v, ok, err := snap.Get("r/a/1")
			if err != nil || !ok || string(v) != "kept" {
				t.Fatalf("after the reopen: %q, found %v, err %v; want the committed value", v, ok, err)
			}
		})
	}
}
