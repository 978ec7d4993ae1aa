package joinstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/violation"
)

// TestDamagedTableFailsOpenNamingTheFile overwrites 512 bytes in the middle
// of a table of a closed state directory holding 2,000 violations. Opening
// it must fail, naming the damaged file and how to recover, rather than
// start with part of the state (without checksum verification it served
// 716 of the 2,000).
func TestDamagedTableFailsOpenNamingTheFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]engine.Op{}
	for i := range 2000 {
		v := violation.Violation{ID: fmt.Sprintf("v%04d", i), Rule: "r", Key: fmt.Sprintf("payment-%04d", i), State: violation.Open, DetectedAt: time.Unix(int64(i), 0).UTC()}
		b, _ := json.Marshal(v)
		ops["v/"+v.ID] = engine.Op{Value: b}
	}
	if err := s.Commit(PartitionDelta{Partition: 0, Delta: &engine.Delta{Ops: ops}, Offsets: map[string]int64{"payments": 1999}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table written at close")
	}
	f, err := os.OpenFile(tables[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if _, err := f.WriteAt([]byte(strings.Repeat("\x5a", 512)), st.Size()/3); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s, err = Open(dir, Options{}, nil)
	if err == nil {
		vs, verr := s.Violations(Filter{})
		s.Close()
		t.Fatalf("opened a damaged state directory; it serves %d of 2000 violations (%v)", len(vs), verr)
	}
	var de *DamagedError
	if !errors.As(err, &de) {
		t.Fatalf("error %v is not a DamagedError", err)
	}
	msg := err.Error()
	for _, want := range []string{filepath.Base(tables[0]), "changelog", "move the state directory aside"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not name %q: %s", want, msg)
		}
	}
}
