package joinstate

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/violation"
)

func TestCommitIsDurableAndPartitioned(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := violation.Violation{ID: "v1", Rule: "r", State: violation.Open, DetectedAt: time.Unix(100, 0).UTC()}
	vb, _ := json.Marshal(v)
	err = s.Commit(
		PartitionDelta{Partition: 1, Delta: &engine.Delta{Ops: map[string]engine.Op{"r/a/x": {Value: []byte("1")}, "v/v1": {Value: vb}}}, Offsets: map[string]int64{"payments": 41}},
		PartitionDelta{Partition: 2, Delta: &engine.Delta{Ops: map[string]engine.Op{"r/a/y": {Value: []byte("2")}}}, Offsets: map[string]int64{"payments": 7}},
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(PartitionDelta{Partition: 2, Delta: &engine.Delta{Ops: map[string]engine.Op{"r/a/y": {Delete: true}}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := map[string]string{}
	err = s.Snapshot(1).Scan("r/", func(k string, v []byte) error { got[k] = string(v); return nil })
	if err != nil || len(got) != 1 || got["r/a/x"] != "1" {
		t.Fatalf("partition 1 state = %v, %v", got, err)
	}
	got = map[string]string{}
	_ = s.Snapshot(2).Scan("r/", func(k string, v []byte) error { got[k] = string(v); return nil })
	if len(got) != 0 {
		t.Fatalf("partition 2 state after delete = %v", got)
	}
	if off, err := s.AppliedOffset("payments", 1); err != nil || off != 41 {
		t.Fatalf("applied offset = %d, %v", off, err)
	}
	if off, _ := s.AppliedOffset("ledger", 1); off != -1 {
		t.Fatalf("unknown applied offset = %d, want -1", off)
	}
	vs, err := s.Violations(Filter{State: violation.Open})
	if err != nil || len(vs) != 1 || vs[0].ID != "v1" {
		t.Fatalf("violations = %v, %v", vs, err)
	}
	if vs, _ := s.Violations(Filter{State: violation.Resolved}); len(vs) != 0 {
		t.Fatalf("resolved violations = %v", vs)
	}
}
