// Package joinstate keeps the monitor's durable state in Badger: each
// partition's join state and violations, and the input offsets that state
// reflects, written together so that no event is ever applied twice.
package joinstate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// Options size Badger for the machine.
//
// How the memory divides (the README's "State memory" has the measured
// figures). Badger holds, in the Go heap: its memtables (each one's skiplist
// arena is MemTableSize × 1.3, Badger's arenaSize; the one taking writes, up
// to NumMemtables waiting to be flushed and the one being flushed), the
// buffers of its table builders (every flushed memtable and every compaction
// output is built whole in memory before it is written: a flush's builder
// grows to hold the memtable's table, a compaction's starts at twice its
// table size; Badger pools eight of them for reuse, hands any of them to the
// next flush or compaction whatever it grew to, and never frees them under a
// steady write load, so each ends up the size of a flush), and the block
// cache's entries. Beside the
// heap, in the process's RSS as file-backed pages: each memtable's
// write-ahead log (up to MemTableSize each) and the table pages touched
// since the last release (see mapped.go). Badger v4's index cache serves
// encrypted tables only (table.fetchIndex); the state is not encrypted, so
// it gets none: indexes and bloom filters are read from the mapped tables.
type Options struct {
	// CacheSize is the state's memory budget (`state.cache_size`): a
	// memtable of a sixteenth (at most 64 MiB; two full ones may wait to be
	// flushed, so at most four arenas, about a third of CacheSize at their
	// largest, and their logs' pages beside them) and a block cache of
	// half. With uncompressed tables a cached block points into the
	// table's mapping, so the block cache's own heap is a few per cent of
	// its size; the table builders, eight pooled buffers each about the
	// size of a flushed memtable's table, take the rest. A memtable of an
	// eighth made the builders half the Go heap (168 of 411 MiB in a
	// 4M-event fill, against 110 of 328 with a sixteenth).
	// Default 256 MiB; below 24 MiB it is raised to 24 MiB. The fields
	// below, when set, override their share.
	CacheSize int64
	// MemTableSize is the size of each in-memory table.
	MemTableSize int64
	// NumMemtables is how many full memtables may wait to be flushed
	// before writes stall. Default 2: with one, and memtables of a
	// sixteenth, the five example rules took twice the CPU per event
	// (every commit split at Badger's batch limit, a fraction of the
	// memtable, and a flush and level-0 compaction for every table).
	NumMemtables int
	// BlockCacheSize caches table blocks.
	BlockCacheSize int64
	// NumCompactors is the number of compaction goroutines (Badger needs
	// two at least). Default 2.
	NumCompactors int
	// NumLevelZeroTables is how many flushed memtables (level-0 tables)
	// start a compaction (default NumMemtables); NumLevelZeroTablesStall
	// how many stall writes (default 15).
	NumLevelZeroTables, NumLevelZeroTablesStall int
	// BaseTableSize is the size of the tables compactions write at the
	// base level (deeper levels' are TableSizeMultiplier times larger per
	// level). Each compaction output is built in a buffer of twice its
	// size, several at a time, and Badger keeps eight such buffers pooled:
	// this, not a cache, sets most of the write path's heap. Default 1 MiB
	// (Badger's is 2 MiB).
	BaseTableSize int64
	// TableSizeMultiplier is how much larger each level's tables are than
	// the level's above it, below the base level. Default 1: every
	// compaction writes tables of BaseTableSize at every level, whatever
	// the state's size. Badger's 2 doubles them per level, so as the state
	// grows and the base level moves up, the deepest level's tables grow
	// (8 MiB at 1.3 GiB of tables): a compaction into it then builds each
	// table in a buffer of twice that, which joins the builder pool and
	// stays there (sized for the largest table ever built, see Options),
	// and merging one table of the level above rewrites several of its
	// large tables at once, all resident in the process until the
	// compaction installs them (see mapped.go). The cost is more table
	// files (one per MiB of state, each mapped and its file open).
	TableSizeMultiplier int
	// InMemory keeps everything in memory (for the demo and tests). Default false.
	InMemory bool
	// ReleaseMappedEvery is how often the resident pages of Badger's
	// memory-mapped table files are handed back to the kernel's page cache
	// (see mapped.go), so that they do not grow the process's RSS with the
	// state on disk. Default 250ms (a compaction writes and reads tens of
	// MiB a second, all of it resident until released); negative never.
	ReleaseMappedEvery time.Duration
}

// DefaultCacheSize is Options.CacheSize's default: a monitor of about
// 512 MiB in all.
const DefaultCacheSize = 256 << 20

// MinCacheSize is the smallest Options.CacheSize.
const MinCacheSize = 24 << 20

func (o Options) withDefaults() Options {
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	o.CacheSize = max(o.CacheSize, MinCacheSize)
	if o.NumMemtables == 0 {
		o.NumMemtables = 2
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = min(o.CacheSize/16, 64<<20)
	}
	if o.BlockCacheSize == 0 {
		o.BlockCacheSize = o.CacheSize / 2
	}
	if o.NumCompactors == 0 {
		o.NumCompactors = 2
	}
	if o.NumLevelZeroTables == 0 {
		o.NumLevelZeroTables = o.NumMemtables
	}
	if o.NumLevelZeroTablesStall == 0 {
		o.NumLevelZeroTablesStall = 15
	}
	if o.BaseTableSize == 0 {
		o.BaseTableSize = 1 << 20
	}
	if o.TableSizeMultiplier == 0 {
		o.TableSizeMultiplier = 1
	}
	if o.ReleaseMappedEvery == 0 {
		o.ReleaseMappedEvery = 250 * time.Millisecond
	}
	return o
}

// Store is the monitor's Badger database.
type Store struct {
	db  *badger.DB
	log *zap.Logger
	// dir is the state directory, absolute ("" in memory).
	dir string
	// stopRelease ends the loop releasing the table files' resident pages;
	// releaseDone is closed when it has ended. Nil when it does not run.
	stopRelease, releaseDone chan struct{}
	// outbox, when enabled, queues every violation change for publication
	// in the same transaction as the change (see outbox.go).
	outbox     bool
	outboxNext uint64
}

// Open opens (or creates) the state directory.
func Open(dir string, opts Options, log *zap.Logger) (*Store, error) {
	if log == nil {
		log = zap.NewNop()
	}
	opts = opts.withDefaults()
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log.Named("badger").Sugar()}).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(opts.NumMemtables).
		WithBlockCacheSize(opts.BlockCacheSize).
		// No index cache: Badger v4 uses it for encrypted tables only.
		WithIndexCacheSize(0).
		WithNumCompactors(opts.NumCompactors).
		WithNumLevelZeroTables(opts.NumLevelZeroTables).
		WithNumLevelZeroTablesStall(opts.NumLevelZeroTablesStall).
		WithBaseTableSize(opts.BaseTableSize).
		// Uncompressed tables. Badger builds each table in memory, and with
		// Snappy it also keeps a compressed copy of every block: those
		// pooled builder buffers, not the caches, were most of the heap
		// (472 of 542 MiB after a 4M-event fill, half of it with
		// compression off). Tables read straight from their mapping then,
		// so the block cache serves less. Each table's compression is in
		// the manifest, so directories written with Snappy still read.
		WithCompression(options.None).
		// State values are small; the rare large one (a table entry of a
		// big event) goes to the value log. Badger needs the threshold below
		// its batch size, a fraction of the memtable, at the smallest cache.
		WithValueThreshold(64 << 10).
		// Commits are synced explicitly per batch (see Commit); syncing every
		// write as well would only cost time.
		WithSyncWrites(false).
		// A damaged table must stop the monitor, not serve part of the
		// state: every table is verified before the open (verifyTables, since
		// Badger's check at open skips a bad table), and every block and
		// value when read.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true)
	// Badger's Options have no With… method for it.
	bo.TableSizeMultiplier = opts.TableSizeMultiplier
	if opts.InMemory {
		bo = bo.WithInMemory(true).WithDir("").WithValueDir("")
	}
	if !opts.InMemory {
		if err := removeEmptyLogs(dir, log); err != nil {
			return nil, err
		}
		if err := verifyTables(dir); err != nil {
			return nil, err
		}
	}
	db, err := badger.Open(bo)
	if err != nil {
		if err := asDamaged(dir, err); errors.As(err, new(*DamagedError)) {
			return nil, err
		}
		return nil, fmt.Errorf("open state dir %q: %w", dir, err)
	}
	if err := checkFormat(db, dir); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, log: log}
	if !opts.InMemory {
		if s.dir, err = filepath.Abs(dir); err != nil {
			db.Close()
			return nil, err
		}
	}
	if !opts.InMemory && opts.ReleaseMappedEvery > 0 {
		s.stopRelease, s.releaseDone = make(chan struct{}), make(chan struct{})
		go s.releaseMappedLoop(opts.ReleaseMappedEvery, s.stopRelease, s.releaseDone)
	}
	return s, nil
}

// formatKey records the engine's state format (engine.StateFormat) in the
// state directory.
var formatKey = []byte("meta/format")

// FormatError is returned by Open for a state directory written in another
// state format than this build's.
type FormatError struct {
	Dir       string
	Found     int // 1 for a directory from before the format was recorded
	Supported int
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("state dir %q holds state format %d; this monitor reads format %d only: "+
		"start it with an empty state dir (with kafka.changelog enabled the state is rebuilt from the changelog "+
		"only if the changelog was written by this format too, so otherwise re-read the input from its retention)",
		e.Dir, e.Found, e.Supported)
}

// checkFormat refuses a state directory of another format and stamps a new
// one. A directory without the stamp but with engine state is format 1.
func checkFormat(db *badger.DB, dir string) error {
	found := 0
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(formatKey)
		if err == nil {
			return item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("corrupt state format marker")
				}
				found = int(binary.BigEndian.Uint64(v))
				return nil
			})
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		// Format 1 had every key type but the index.
		for _, prefix := range []string{statekey.Rule, statekey.Violation, statekey.Table, statekey.Stream} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
			it.Rewind()
			old := it.Valid()
			it.Close()
			if old {
				found = 1
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state dir %q: read format: %w", dir, err)
	}
	switch found {
	case engine.StateFormat:
		return nil
	case 0:
		err := db.Update(func(txn *badger.Txn) error {
			return txn.Set(formatKey, binary.BigEndian.AppendUint64(nil, engine.StateFormat))
		})
		if err == nil {
			err = db.Sync()
		}
		if err != nil {
			return fmt.Errorf("state dir %q: record format: %w", dir, err)
		}
		return nil
	default:
		return &FormatError{Dir: dir, Found: found, Supported: engine.StateFormat}
	}
}

// Close flushes and closes the database.
func (s *Store) Close() error {
	if s.stopRelease != nil {
		// Before Badger unmaps its tables: the loop must not madvise a range
		// that is no longer theirs.
		close(s.stopRelease)
		<-s.releaseDone
		s.stopRelease = nil
	}
	return s.db.Close()
}

func offsetKey(topic string, partition int32) []byte {
	b := append([]byte("o/"+topic+"/"), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(b)-4:], uint32(partition))
	return b
}

// Snapshot returns one partition's state as the engine reads it: point
// reads and ordered range scans straight from Badger (its block and index
// caches are the read cache). Reads come from one read transaction, opened
// by the first read after Release and kept until the next Release: the
// engine releases it once per batch (engine.ViewSnapshot), where a
// transaction per read cost as much as the read itself. A new view reflects
// every commit before it.
func (s *Store) Snapshot(partition int32) engine.Snapshot {
	return &snapshot{db: s.db, partition: partition}
}

type snapshot struct {
	db        *badger.DB
	partition int32
	// txn is the current view; nil until the first read after Release.
	txn *badger.Txn
	// key is reused to build stored keys, so a read allocates none.
	key []byte
}

// view returns the current read transaction, opening one if needed.
func (sn *snapshot) view() *badger.Txn {
	if sn.txn == nil {
		sn.txn = sn.db.NewTransaction(false)
	}
	return sn.txn
}

// Release implements engine.ViewSnapshot: it ends the current view, so
// that Badger may drop the versions it held, and the next read sees every
// commit before it.
func (sn *snapshot) Release() {
	if sn.txn != nil {
		sn.txn.Discard()
		sn.txn = nil
	}
}

func (sn *snapshot) Get(key string) ([]byte, bool, error) {
	if len(key) < statekey.TypeLen {
		return nil, false, fmt.Errorf("state key %q is shorter than a key type", key)
	}
	sn.key = statekey.AppendStored(sn.key[:0], sn.partition, key)
	item, err := sn.view().Get(sn.key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err == nil {
		var out []byte
		if out, err = item.ValueCopy(nil); err == nil {
			return out, true, nil
		}
	}
	return nil, false, fmt.Errorf("read state %q of partition %d: %w", key, sn.partition, err)
}

// bounds returns the stored keys of the range [start, end) of the
// partition. A range stays inside the key type of start: an empty end, or one
// of another type, ends with that type.
func (sn *snapshot) bounds(start, end string) (lo, hi []byte, err error) {
	if len(start) < statekey.TypeLen {
		return nil, nil, fmt.Errorf("range start %q is shorter than a key type", start)
	}
	lo = statekey.Stored(sn.partition, start)
	if len(end) >= statekey.TypeLen && end[:statekey.TypeLen] == start[:statekey.TypeLen] {
		return lo, statekey.Stored(sn.partition, end), nil
	}
	return lo, []byte(statekey.PrefixEnd(string(statekey.Stored(sn.partition, start[:statekey.TypeLen])))), nil
}

// Scan visits [start, end) of the partition. A range stays inside the key
// type of start: an empty end, or one of another type, ends with that type.
func (sn *snapshot) Scan(start, end string, fn func(key string, value []byte) bool) error {
	lo, hi, err := sn.bounds(start, end)
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	// Every key in [lo, hi) starts with their common prefix. Bounding the
	// iterator by it keeps Badger from walking on past hi: its Seek and Next
	// skip deleted keys until they find a live one, and a time-ordered
	// index (deadlines, expiries) holds a long run of deleted keys beyond
	// the watermark, which every due scan would otherwise walk through.
	prefix := commonPrefix(lo, hi)
	err = func() error {
		it := sn.view().NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Seek(lo); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if bytes.Compare(k, hi) >= 0 {
				return nil
			}
			var stop bool
			err := item.Value(func(v []byte) error {
				stop = !fn(statekey.Local(k), v)
				return nil
			})
			if err != nil {
				return err
			}
			if stop {
				return nil
			}
		}
		return nil
	}()
	if err != nil {
		return fmt.Errorf("scan state of partition %d: %w", sn.partition, err)
	}
	return nil
}

// LastKey implements engine.LastKeySnapshot with one reverse seek. The
// range stays inside the key type of start, as in Scan.
func (sn *snapshot) LastKey(start, end string) (string, bool, error) {
	lo, hi, err := sn.bounds(start, end)
	if err != nil {
		return "", false, err
	}
	it := sn.view().NewIterator(badger.IteratorOptions{Prefix: commonPrefix(lo, hi), Reverse: true})
	defer it.Close()
	// A reverse Seek lands on the greatest key <= hi; hi itself is outside.
	for it.Seek(hi); it.Valid(); it.Next() {
		k := it.Item().Key()
		if bytes.Compare(k, hi) >= 0 {
			continue
		}
		if bytes.Compare(k, lo) < 0 {
			return "", false, nil
		}
		return statekey.Local(k), true, nil
	}
	return "", false, nil
}

// commonPrefix returns the longest prefix a and b share.
func commonPrefix(a, b []byte) []byte {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return a[:n:n]
}

// PartitionDelta is one partition's changes and the input offsets they
// reflect: the last applied offset per topic.
type PartitionDelta struct {
	Partition int32
	Delta     *engine.Delta
	Offsets   map[string]int64
	// ChangelogEnd, when not zero, is the changelog end offset this commit's
	// state reflects (the delta was appended to the changelog first).
	ChangelogEnd int64
}

// Commit writes the deltas and applied offsets of any number of partitions
// and syncs them to disk, so that the caller may then commit the offsets to
// Kafka. One commit per poll keeps the fsync cost per batch, not per event.
//
// It is one Badger transaction when it fits. A larger one is split, with the
// offsets in the last part: a crash in between leaves some state applied and
// the offsets behind, and re-reading those records is harmless because the
// engine applies an event twice as once (ids are deterministic, sets dedup).
func (s *Store) Commit(deltas ...PartitionDelta) error {
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	// The state's stored keys are carved from one buffer and its writes'
	// entries from one slice, instead of a key and an entry allocated per
	// write. Ownership: Badger's transaction keeps each key, value and
	// entry until it is committed or discarded; both are made here, and
	// nothing writes to a part of them once it is handed over (an append
	// writes past every part handed over, and a buffer that grows is
	// copied, leaving the parts handed over where they were), so what
	// Badger reads is what was set. Values are the delta's own (engine.Op:
	// never modified once recorded); Badger copies keys and values into its
	// memtable and value log by the time Commit returns.
	entries, err := s.outboxEntries(deltas)
	if err != nil {
		return err
	}
	// sets counts every write below that is not a delete: the state's, the
	// outbox's and the offsets', so the entry slice never grows (a grown
	// slice would copy every entry made so far, once per commit).
	keyBytes, sets := 0, len(entries)
	for _, pd := range deltas {
		sets += len(pd.Offsets)
		if pd.ChangelogEnd > 0 {
			sets++
		}
		if pd.Delta == nil {
			continue
		}
		for k, op := range pd.Delta.Ops {
			keyBytes += len(k) + 4
			if !op.Delete {
				sets++
			}
		}
	}
	keys := make([]byte, 0, keyBytes)
	stored := func(partition int32, k string) []byte {
		start := len(keys)
		keys = statekey.AppendStored(keys, partition, k)
		return keys[start:len(keys):len(keys)]
	}
	writes := make([]badger.Entry, 0, sets)
	// write sets k to v, or deletes k, in the transaction in hand; at
	// Badger's batch limit it commits that one and writes to a new one.
	write := func(k, v []byte, del bool) error {
		var e *badger.Entry
		if !del {
			writes = append(writes, badger.Entry{Key: k, Value: v})
			e = &writes[len(writes)-1]
		}
		for retried := false; ; retried = true {
			var err error
			if del {
				err = txn.Delete(k)
			} else {
				err = txn.SetEntry(e)
			}
			if retried || !errors.Is(err, badger.ErrTxnTooBig) {
				return err
			}
			if err := txn.Commit(); err != nil {
				return err
			}
			txn = s.db.NewTransaction(true)
		}
	}
	set := func(k, v []byte) error { return write(k, v, false) }
	del := func(k []byte) error { return write(k, nil, true) }
	for _, pd := range deltas {
		if pd.Delta == nil {
			continue
		}
		for k, op := range pd.Delta.Ops {
			var err error
			if strings.HasPrefix(k, statekey.Violation) {
				// The violation may replace one this delta's engine never
				// read (see index.go): its index entries go with it.
				stale, err := replacedIndexKeys(txn, pd.Partition, k, op.Value)
				if err != nil {
					return fmt.Errorf("write state of partition %d: %w", pd.Partition, err)
				}
				for _, sk := range stale {
					if err := del(sk); err != nil {
						return fmt.Errorf("write state of partition %d: %w", pd.Partition, err)
					}
				}
			}
			if op.Delete {
				err = del(stored(pd.Partition, k))
			} else {
				err = set(stored(pd.Partition, k), op.Value)
			}
			if err != nil {
				return fmt.Errorf("write state of partition %d: %w", pd.Partition, err)
			}
		}
	}
	for _, e := range entries {
		if err := set(e[0], e[1]); err != nil {
			return fmt.Errorf("write outbox: %w", err)
		}
	}
	for _, pd := range deltas {
		if pd.ChangelogEnd > 0 {
			if err := set(changelogMetaKey(pd.Partition), binary.BigEndian.AppendUint64(nil, uint64(pd.ChangelogEnd))); err != nil {
				return fmt.Errorf("write changelog offset of partition %d: %w", pd.Partition, err)
			}
		}
		for topic, off := range pd.Offsets {
			if err := set(offsetKey(topic, pd.Partition), binary.BigEndian.AppendUint64(nil, uint64(off))); err != nil {
				return fmt.Errorf("write applied offset %s[%d]: %w", topic, pd.Partition, err)
			}
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("commit state: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("sync state: %w", err)
	}
	for _, pd := range deltas {
		if pd.Delta != nil {
			pd.Delta.MarkDurable()
		}
	}
	return nil
}

// AppliedOffset returns the last offset of topic/partition whose effects are
// in the state, or -1 when none are.
func (s *Store) AppliedOffset(topic string, partition int32) (int64, error) {
	off := int64(-1)
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(offsetKey(topic, partition))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("corrupt applied offset for %s[%d]", topic, partition)
			}
			off = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	return off, err
}

// Filter selects violations for listing.
type Filter struct {
	Rule     string
	State    violation.State // empty for all
	Customer string
	// Key selects one entity's violations when set.
	Key string
	// IDMatch, when set, decides whether a stored customer or key matches
	// the query's Customer or Key (privacy.Minimizer.Matches also accepts
	// an HMAC token). Default: equality.
	IDMatch func(stored, query string) bool
	// Since and Until bound DetectedAt when set.
	Since, Until time.Time
}

func (f Filter) idMatch(stored, query string) bool {
	if f.IDMatch != nil {
		return f.IDMatch(stored, query)
	}
	return stored == query
}

func (f Filter) match(v *violation.Violation) bool {
	return (f.Rule == "" || v.Rule == f.Rule) &&
		(f.State == "" || v.State == f.State) &&
		(f.Customer == "" || f.idMatch(v.Customer, f.Customer)) &&
		(f.Key == "" || f.idMatch(v.Key, f.Key)) &&
		(f.Since.IsZero() || !v.DetectedAt.Before(f.Since)) &&
		(f.Until.IsZero() || v.DetectedAt.Before(f.Until))
}

// Violations lists every durable violation that matches f, newest
// detection first. It reads them all: for tools and start-up, not for the
// API (ViolationPage).
func (s *Store) Violations(f Filter) ([]violation.Violation, error) {
	return AllViolations(s, f)
}

// AllViolations lists every violation of r that matches f, page after page.
func AllViolations(r ViolationReader, f Filter) ([]violation.Violation, error) {
	var out []violation.Violation
	q := Query{Filter: f, Limit: MaxPageSize}
	for {
		page, err := r.ViolationPage(q)
		if err != nil {
			return out, err
		}
		out = append(out, page.Violations...)
		if page.Next == "" {
			return out, nil
		}
		q.After = page.Next
	}
}

// RunGC reclaims value-log space until ctx ends. Badger does not do it by
// itself; without it the value log only grows.
func (s *Store) RunGC(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for s.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

// badgerLogger adapts zap to Badger's logger, demoting its chatty info
// lines to debug.
type badgerLogger struct{ s *zap.SugaredLogger }

func (l badgerLogger) Errorf(f string, a ...any)   { l.s.Errorf(f, a...) }
func (l badgerLogger) Warningf(f string, a ...any) { l.s.Warnf(f, a...) }
func (l badgerLogger) Infof(f string, a ...any)    { l.s.Debugf(f, a...) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.s.Debugf(f, a...) }
