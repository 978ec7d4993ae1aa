package joinstate

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/statekey"
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
	ops := map[string]engine.Op{"r/a/x": {Value: []byte("1")}, "v/v1": {Value: vb}}
	for _, k := range statekey.IndexKeys(&v) {
		ops[k] = engine.Op{Value: []byte{}}
	}
	err = s.Commit(
		PartitionDelta{Partition: 1, Delta: &engine.Delta{Ops: ops}, Offsets: map[string]int64{"payments": 41}},
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
	err = engine.ScanPrefix(s.Snapshot(1), "r/", func(k string, v []byte) error { got[k] = string(v); return nil })
	if err != nil || len(got) != 1 || got["r/a/x"] != "1" {
		t.Fatalf("partition 1 state = %v, %v", got, err)
	}
	got = map[string]string{}
	_ = engine.ScanPrefix(s.Snapshot(2), "r/", func(k string, v []byte) error { got[k] = string(v); return nil })
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

func TestOutboxQueuesChangesWithTheirCommit(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnableOutbox(); err != nil {
		t.Fatal(err)
	}
	open := violation.Violation{ID: "v1", State: violation.Open}
	resolved := violation.Violation{ID: "v1", State: violation.Resolved}
	if err := s.Commit(PartitionDelta{Partition: 0, Delta: &engine.Delta{Changed: []violation.Violation{open, resolved}}}); err != nil {
		t.Fatal(err)
	}
	entries, err := s.Outbox(10)
	if err != nil || len(entries) != 2 || entries[0].Event != "opened" || entries[1].Event != "resolved" || entries[0].Seq >= entries[1].Seq {
		t.Fatalf("outbox %+v, %v", entries, err)
	}
	id, _ := s.MemberID()
	if err := s.OutboxDone(entries[0].Seq); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Reopened, the rest is still queued, new entries follow it, and the
	// member keeps its identity.
	s, err = Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.EnableOutbox(); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(PartitionDelta{Partition: 0, Delta: &engine.Delta{Changed: []violation.Violation{{ID: "v2", State: violation.Open}}}}); err != nil {
		t.Fatal(err)
	}
	entries, _ = s.Outbox(10)
	if len(entries) != 2 || entries[0].Violation.State != violation.Resolved || entries[1].Violation.ID != "v2" || entries[1].Seq <= entries[0].Seq {
		t.Fatalf("after reopening: %+v", entries)
	}
	if again, _ := s.MemberID(); again != id || id == "" {
		t.Fatalf("member id %q then %q", id, again)
	}
}

// A state directory written by the earlier state format (no marker, engine
// keys present) is refused with a message that says what to do, not misread.
func TestOpenRefusesAnotherStateFormat(t *testing.T) {
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		return txn.Set(append([]byte("r/\x00\x00\x00\x01"), "rule/d/x"...), []byte(`{"key":"p1"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(dir, Options{}, nil)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Found != 1 || !strings.Contains(err.Error(), "empty state dir") {
		t.Fatalf("open of a format-1 dir: %v", err)
	}
	// A directory of format 2 (an absence rule's state in three keys per
	// join key) is refused too: this build reads one record per key.
	dir = t.TempDir()
	if db, err = badger.Open(badger.DefaultOptions(dir).WithLogger(nil)); err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(formatKey, binary.BigEndian.AppendUint64(nil, 2)); err != nil {
			return err
		}
		return txn.Set(append([]byte("r/\x00\x00\x00\x01"), "rule/S/p1"...), []byte{})
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(dir, Options{}, nil)
	if !errors.As(err, &fe) || fe.Found != 2 || fe.Supported != engine.StateFormat || !strings.Contains(err.Error(), "empty state dir") {
		t.Fatalf("open of a format-2 dir: %v", err)
	}
	// A directory of format 3 (rule keys under the rule's name) is refused
	// too: this build keys a rule's state by its id.
	dir = t.TempDir()
	if db, err = badger.Open(badger.DefaultOptions(dir).WithLogger(nil)); err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(formatKey, binary.BigEndian.AppendUint64(nil, 3)); err != nil {
			return err
		}
		return txn.Set(append([]byte("r/\x00\x00\x00\x01"), "rule/k/p1"...), []byte{})
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(dir, Options{}, nil)
	if !errors.As(err, &fe) || fe.Found != 3 || fe.Supported != engine.StateFormat || !strings.Contains(err.Error(), "empty state dir") {
		t.Fatalf("open of a format-3 dir: %v", err)
	}
	// A new directory is stamped and opens again.
	dir = t.TempDir()
	s, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(dir, Options{}, nil); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	s.Close()
}

// A snapshot reads from one view until Release, and the view after it
// reflects every commit before it: the engine releases once per batch, after
// dropping the deltas that are durable, so it never misses one.
func TestSnapshotViewLastsUntilRelease(t *testing.T) {
	s, err := Open(t.TempDir(), Options{InMemory: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func(v string) {
		t.Helper()
		if err := s.Commit(PartitionDelta{Partition: 3, Delta: &engine.Delta{Ops: map[string]engine.Op{"r/a/k": {Value: []byte(v)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	put("1")
	snap := s.Snapshot(3).(engine.ViewSnapshot)
	if v, ok, err := snap.Get("r/a/k"); err != nil || !ok || string(v) != "1" {
		t.Fatalf("Get = %q %v %v", v, ok, err)
	}
	put("2")
	if v, _, _ := snap.Get("r/a/k"); string(v) != "1" {
		t.Fatalf("Get inside the view = %q, want the view's 1", v)
	}
	snap.Release()
	if v, _, _ := snap.Get("r/a/k"); string(v) != "2" {
		t.Fatalf("Get after Release = %q, want 2", v)
	}
	var scanned string
	put("3")
	_ = snap.Scan("r/", "", func(_ string, v []byte) bool { scanned = string(v); return true })
	if scanned != "2" {
		t.Fatalf("Scan inside the view = %q, want 2", scanned)
	}
	snap.Release()
	_ = snap.Scan("r/", "", func(_ string, v []byte) bool { scanned = string(v); return true })
	if scanned != "3" {
		t.Fatalf("Scan after Release = %q, want 3", scanned)
	}
	snap.Release()
}

// Tables written before the monitor turned Badger's compression off are
// Snappy; later ones are not, and a directory holds both after an upgrade.
// Each is verified and read with its own compression, from the manifest.
func TestSnappyTablesOfEarlierBuildsStillRead(t *testing.T) {
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithCompression(options.Snappy))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(formatKey, binary.BigEndian.AppendUint64(nil, engine.StateFormat)); err != nil {
			return err
		}
		return txn.Set([]byte("test/old"), []byte("written with snappy"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil { // flushes the memtable to a Snappy table
		t.Fatal(err)
	}
	s, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatalf("open a directory of Snappy tables: %v", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("test/new"), []byte("written plain")) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	compressions, err := tableCompressions(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[options.CompressionType]bool{}
	for _, c := range compressions {
		seen[c] = true
	}
	if !seen[options.Snappy] || !seen[options.None] {
		t.Fatalf("want a Snappy and an uncompressed table, the manifest lists %v", compressions)
	}
	if s, err = Open(dir, Options{}, nil); err != nil {
		t.Fatalf("reopen a directory of both: %v", err)
	}
	defer s.Close()
	for key, want := range map[string]string{"test/old": "written with snappy", "test/new": "written plain"} {
		err := s.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get([]byte(key))
			if err != nil {
				return err
			}
			got, err := item.ValueCopy(nil)
			if err == nil && string(got) != want {
				return fmt.Errorf("%s = %q, want %q", key, got, want)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestLastKeyFindsTheGreatestLiveKeyOfARange checks the reverse seek the
// engine uses to know which time-ordered keys exist (a transition rule's
// buffer): it agrees with a scan of the same range, skips deleted keys and
// the range's exclusive end, and stays inside its partition and key type.
func TestLastKeyFindsTheGreatestLiveKeyOfARange(t *testing.T) {
	s, err := Open(t.TempDir(), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ops := map[string]engine.Op{}
	for _, k := range []string{"r/a/q/1", "r/a/q/2", "r/a/q/3", "r/a/q/5", "r/a/r/0", "t/x"} {
		ops[k] = engine.Op{Value: []byte{}}
	}
	if err := s.Commit(PartitionDelta{Partition: 1, Delta: &engine.Delta{Ops: ops}}); err != nil {
		t.Fatal(err)
	}
	// Another partition's greater keys, and a deleted one here.
	if err := s.Commit(
		PartitionDelta{Partition: 2, Delta: &engine.Delta{Ops: map[string]engine.Op{"r/a/q/9": {Value: []byte{}}}}},
		PartitionDelta{Partition: 1, Delta: &engine.Delta{Ops: map[string]engine.Op{"r/a/q/5": {Delete: true}}}},
	); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot(1).(engine.LastKeySnapshot)
	mem := engine.NewMemSnapshot()
	mem.Apply(&engine.Delta{Ops: map[string]engine.Op{"r/a/q/1": {}, "r/a/q/2": {}, "r/a/q/3": {}, "r/a/r/0": {}, "t/x": {}}})
	for _, c := range []struct{ start, end, want string }{
		{"r/a/q/", statekey.PrefixEnd("r/a/q/"), "r/a/q/3"},
		{"r/a/q/", "r/a/q/3", "r/a/q/2"},
		{"r/a/q/", "r/a/q/25", "r/a/q/2"},
		{"r/a/q/4", statekey.PrefixEnd("r/a/q/"), ""},
		{"r/a/", statekey.PrefixEnd("r/a/"), "r/a/r/0"},
		{"r/b/", statekey.PrefixEnd("r/b/"), ""},
	} {
		for name, sn := range map[string]engine.LastKeySnapshot{"badger": snap, "memory": mem} {
			got, ok, err := sn.LastKey(c.start, c.end)
			if err != nil || got != c.want || ok != (c.want != "") {
				t.Errorf("%s: LastKey(%q, %q) = %q, %v, %v; want %q", name, c.start, c.end, got, ok, err, c.want)
			}
		}
	}
}

// The defaults that size Badger's write path reach it: memtables of a
// sixteenth of the cache, and tables of the base size at every level (see
// Options.TableSizeMultiplier); a setting overrides its default.
func TestDefaultsSizeBadgersWritePath(t *testing.T) {
	s, err := Open(t.TempDir(), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o := s.db.Opts()
	if o.MemTableSize != DefaultCacheSize/16 || o.NumMemtables != 2 || o.BaseTableSize != 1<<20 || o.TableSizeMultiplier != 1 {
		t.Fatalf("Badger opened with memtables of %d (%d waiting), base tables of %d, table size multiplier %d; want %d, 2, %d, 1",
			o.MemTableSize, o.NumMemtables, o.BaseTableSize, o.TableSizeMultiplier, DefaultCacheSize/16, 1<<20)
	}
	s2, err := Open(t.TempDir(), Options{TableSizeMultiplier: 2, MemTableSize: 8 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if o := s2.db.Opts(); o.TableSizeMultiplier != 2 || o.MemTableSize != 8<<20 {
		t.Fatalf("set multiplier 2 and 8 MiB memtables, Badger has %d and %d", o.TableSizeMultiplier, o.MemTableSize)
	}
}
