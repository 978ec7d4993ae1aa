package joinstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/invmon/invmon/internal/statekey"
)

// Changelog support: every state write of a partition is also appended to a
// compacted changelog topic, so a member that gains the partition can
// rebuild its state. The local state records which changelog offset it
// reflects; when that is the changelog's end, the local copy is current.

// ChangelogKeyPrefixOffset marks an applied-offset record in the changelog:
// the key is the prefix and the topic, the value the big-endian offset.
const ChangelogKeyPrefixOffset = "o/"

func changelogMetaKey(partition int32) []byte {
	return binary.BigEndian.AppendUint32([]byte("meta/changelog/"), uint32(partition))
}

// ChangelogOffset returns the changelog end offset that the local state of
// partition reflects, or -1 when it was never recorded.
func (s *Store) ChangelogOffset(partition int32) (int64, error) {
	v, err := s.metaKey(changelogMetaKey(partition))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return -1, nil
	}
	if err != nil || len(v) != 8 {
		return -1, err
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func (s *Store) metaKey(k []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	return out, err
}

// WipePartition deletes the local state and applied offsets of partition,
// before it is rebuilt from the changelog.
func (s *Store) WipePartition(partition int32, topics []string) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, prefix := range statekey.Types {
		p := statekey.Stored(partition, prefix)
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
			defer it.Close()
			for it.Seek(p); it.ValidForPrefix(p); it.Next() {
				if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("wipe partition %d: %w", partition, err)
		}
	}
	for _, t := range topics {
		if err := wb.Delete(offsetKey(t, partition)); err != nil {
			return err
		}
	}
	if err := wb.Delete(changelogMetaKey(partition)); err != nil {
		return err
	}
	return wb.Flush()
}

// Restorer writes changelog records into a partition's local state.
type Restorer struct {
	s         *Store
	partition int32
	wb        *badger.WriteBatch
	// Entries counts the state entries written.
	Entries int
}

// NewRestorer starts rebuilding partition from its changelog.
func (s *Store) NewRestorer(partition int32) *Restorer {
	return &Restorer{s: s, partition: partition, wb: s.db.NewWriteBatch()}
}

// Add applies one changelog record: a state key and its value, nil for a
// deletion, or an applied offset.
func (r *Restorer) Add(key, value []byte) error {
	k := string(key)
	if topic, ok := strings.CutPrefix(k, ChangelogKeyPrefixOffset); ok {
		if value == nil {
			return r.wb.Delete(offsetKey(topic, r.partition))
		}
		return r.wb.Set(offsetKey(topic, r.partition), append([]byte(nil), value...))
	}
	if len(k) < statekey.TypeLen {
		return fmt.Errorf("changelog key %q is not a state key", k)
	}
	r.Entries++
	if value == nil {
		return r.wb.Delete(statekey.Stored(r.partition, k))
	}
	return r.wb.Set(statekey.Stored(r.partition, k), append([]byte(nil), value...))
}

// Finish writes everything and records that the state reflects the
// changelog up to end.
func (r *Restorer) Finish(end int64) error {
	if err := r.wb.Set(changelogMetaKey(r.partition), binary.BigEndian.AppendUint64(nil, uint64(end))); err != nil {
		return err
	}
	if err := r.wb.Flush(); err != nil {
		return fmt.Errorf("restore partition %d: %w", r.partition, err)
	}
	// The changelog holds every write of every owner, including a violation
	// written twice by two evaluations of one batch, each with its own keys.
	if err := r.s.rebuildIndexes(r.partition); err != nil {
		return fmt.Errorf("restore partition %d: rebuild violation indexes: %w", r.partition, err)
	}
	return r.s.db.Sync()
}

// Cancel abandons a restore.
func (r *Restorer) Cancel() { r.wb.Cancel() }
