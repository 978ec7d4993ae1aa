package joinstate

// Resident pages of Badger's table files. Badger v4 memory-maps every table
// (SST) file and writes each new one through its mapping (table.CreateTable),
// so every table a flush or a compaction wrote stays resident in the
// process, and compactions and reads touch the rest: the process's RSS grew
// with the size of the state on disk (300 MiB of tables at 10 million
// events), outside the Go heap and outside every cache setting, and Badger
// has no option to read tables any other way. The releaser hands those pages
// back to the kernel's page cache every Options.ReleaseMappedEvery (250 ms): they stay
// cached by the kernel (reclaimable, not the process's), and the next read
// of one maps it again from the page cache (a minor fault, no I/O).

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// releaseMappedLoop releases the resident pages of the table files every
// interval until stop is closed.
func (s *Store) releaseMappedLoop(every time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if _, err := s.releaseMapped(); err != nil {
				s.log.Warn("release mapped state table pages", zap.Error(err))
			}
		}
	}
}

// releaseMapped drops this process's mappings of the resident pages of the
// table files (madvise MADV_DONTNEED) and returns how many mappings it
// released.
//
// Why it is safe. The table mappings are MAP_SHARED mappings of the files:
// MADV_DONTNEED on them only removes the page table entries; the pages, dirty
// ones included, stay in the page cache, and the next access maps them again
// with the same contents, also in the middle of a read or of Badger writing a
// new table. What must not happen is madvising an address range that Badger
// unmapped in between (a table deleted after a compaction) and that another
// mapping took over: MADV_DONTNEED on anonymous memory (the Go heap) zeroes
// it. So only tables that cannot be unmapped meanwhile are touched: an
// iterator over every table holds a reference on each, and Badger unmaps a
// table only when its last reference goes; a table counts as held when it is
// listed both before and after the iterator was made (table ids are never
// reused, so it lived throughout, the iterator's making included). The
// process's mappings are read while the iterator is open.
func (s *Store) releaseMapped() (int, error) {
	before := tableIDs(s.db)
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{}) // holds a reference on every table
	defer it.Close()
	held := map[uint64]bool{}
	for id := range tableIDs(s.db) {
		if before[id] {
			held[id] = true
		}
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range tableMappings(maps, s.dir) {
		if !held[m.id] {
			continue
		}
		if err := dontNeed(m.start, m.end-m.start); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// TableIDs returns the ids of the tables in the LSM tree now: not the new
// tables of a compaction still running, nor those it replaced and a reader
// still holds. Their files are NNNNNN.sst in the state directory.
func (s *Store) TableIDs() map[uint64]bool { return tableIDs(s.db) }

func tableIDs(db *badger.DB) map[uint64]bool {
	ids := map[uint64]bool{}
	for _, t := range db.Tables() {
		ids[t.ID] = true
	}
	return ids
}

// tableMapping is one mapping of a table file of the state directory.
type tableMapping struct {
	start, end uintptr
	id         uint64
}

// tableMappings returns the mappings of dir's table files (NNNNNN.sst) in a
// /proc/PID/maps listing; dir is absolute. A file deleted while mapped is
// listed with " (deleted)" and left out.
func tableMappings(maps []byte, dir string) []tableMapping {
	var out []tableMapping
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.SplitN(sc.Text(), " ", 6)
		if len(fields) < 6 {
			continue
		}
		path := strings.TrimLeft(fields[5], " ")
		if filepath.Dir(path) != dir || !strings.HasSuffix(path, ".sst") {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(path), ".sst"), 10, 64)
		if err != nil {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, tableMapping{start: uintptr(start), end: uintptr(end), id: id})
	}
	return out
}
