package joinstate

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/engine"
)

// residentTablePages sums the Rss of this process's mappings of dir's table
// files, from /proc/self/smaps.
func residentTablePages(t *testing.T, dir string) (bytes int64, mappings int) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	abs, _ := filepath.Abs(dir)
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			path := fields[len(fields)-1]
			in = len(fields) >= 6 && filepath.Dir(path) == abs && strings.HasSuffix(path, ".sst")
			if in {
				mappings++
			}
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			bytes += kb << 10
		}
	}
	return bytes, mappings
}

func tableValue(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("value %08d;", i)), 12)
}

// writeTables commits keys [lo, hi) of partition 0 in commits of 1,000.
func writeTables(t *testing.T, s *Store, lo, hi int) {
	t.Helper()
	for i := lo; i < hi; i += 1000 {
		ops := map[string]engine.Op{}
		for j := i; j < min(i+1000, hi); j++ {
			ops[fmt.Sprintf("r/a/%08d", j)] = engine.Op{Value: tableValue(j)}
		}
		if err := s.Commit(PartitionDelta{Partition: 0, Delta: &engine.Delta{Ops: ops}}); err != nil {
			t.Fatal(err)
		}
	}
}

// readTables reads keys [lo, hi) of partition 0 back and checks each value.
func readTables(s *Store, lo, hi int) error {
	snap := s.Snapshot(0)
	if r, ok := snap.(interface{ Release() }); ok {
		defer r.Release()
	}
	for i := lo; i < hi; i++ {
		v, ok, err := snap.Get(fmt.Sprintf("r/a/%08d", i))
		if err != nil {
			return err
		}
		if !ok || !bytes.Equal(v, tableValue(i)) {
			return fmt.Errorf("key %d: got %q (found %v)", i, v, ok)
		}
	}
	return nil
}

// Reading the state maps its table files' pages into the process; the
// release hands them back (the process's resident table pages fall to
// nothing) and every value still reads back the same.
func TestReleaseMappedDropsResidentTablePagesAndKeepsTheData(t *testing.T) {
	dir := t.TempDir()
	const keys = 60_000 // about 9 MiB of values: several tables at the smallest memtable
	// No level-0 compaction (the default starts one at the first flushed
	// table): one running between the count of mappings and the release
	// would add, drop and touch tables under the test's feet.
	opts := Options{CacheSize: MinCacheSize, ReleaseMappedEvery: -1, NumLevelZeroTables: 100, NumLevelZeroTablesStall: 200}
	s, err := Open(dir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeTables(t, s, 0, keys)
	if err := s.Close(); err != nil { // flushes the memtable to a table
		t.Fatal(err)
	}
	if s, err = Open(dir, opts, nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := readTables(s, 0, keys); err != nil {
		t.Fatal(err)
	}
	before, mappings := residentTablePages(t, dir)
	if mappings == 0 || before < 1<<20 {
		t.Fatalf("after reading every key: %d table mappings with %d bytes resident; want tables read through their mappings", mappings, before)
	}
	n, err := s.releaseMapped()
	if err != nil {
		t.Fatal(err)
	}
	after, _ := residentTablePages(t, dir)
	if n != mappings || after > 64<<10 {
		t.Fatalf("released %d of %d table mappings; resident table pages %d bytes before, %d after: want all released", n, mappings, before, after)
	}
	if err := readTables(s, 0, keys); err != nil {
		t.Fatalf("after the release: %v", err)
	}
}

// The release runs while tables are written, compacted away and read:
// every value reads back the same throughout, and nothing crashes (a range
// released after Badger unmapped it and something else mapped it would
// zero that memory).
func TestReleaseMappedDuringWritesAndCompactionsKeepsTheData(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{CacheSize: MinCacheSize, ReleaseMappedEvery: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const rounds, perRound = 6, 15_000
	writeTables(t, s, 0, perRound)
	var wg sync.WaitGroup
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // reads the first round's keys again and again
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := readTables(s, 0, perRound); err != nil {
				readErr <- err
				return
			}
		}
	}()
	for r := 1; r < rounds; r++ {
		// Rewrite the same keys with the same values, so compactions merge
		// and delete tables while they are read and released.
		writeTables(t, s, 0, perRound)
		writeTables(t, s, r*perRound, (r+1)*perRound)
		if _, err := s.releaseMapped(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.Flatten(2); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-readErr:
		t.Fatal(err)
	default:
	}
	if err := readTables(s, 0, rounds*perRound); err != nil {
		t.Fatal(err)
	}
}
