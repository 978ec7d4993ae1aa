package joinstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// One index entry per violation. The engine writes a violation's secondary
// keys (statekey.IndexKeys) with the violation and deletes the old ones when it
// changes one it has read. But one violation can be written by two
// evaluations that did not see each other: a partition lost while its batch
// was on its way to Badger, evaluated again by the next owner at a later
// clock, writes the same violation with another detected_at, so other keys.
// The store therefore keeps the invariant itself, where both writes meet:
// each violation write deletes the keys of the violation it replaces
// (Commit), and a state restored from a changelog, which carries every
// write, has its derived indexes rebuilt from the violations (Finish).

// decodeViolation decodes a stored violation record; nil for an empty one
// (an expired violation's id, kept for dedup).
func decodeViolation(b []byte) (*violation.Violation, error) {
	if len(b) == 0 {
		return nil, nil
	}
	v := &violation.Violation{}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, err
	}
	return v, nil
}

// replacedIndexKeys returns the stored keys of the index entries of the
// violation at key (a v/ key) that a write of value (nil for a delete)
// leaves behind: the keys of the stored violation that the new one does not
// have.
func replacedIndexKeys(txn *badger.Txn, partition int32, key string, value []byte) ([][]byte, error) {
	item, err := txn.Get(statekey.Stored(partition, key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var prev *violation.Violation
	if err := item.Value(func(b []byte) error {
		prev, err = decodeViolation(b)
		return err
	}); err != nil {
		return nil, fmt.Errorf("decode stored violation %s: %w", key, err)
	}
	if prev == nil {
		return nil, nil
	}
	var keep []string
	if v, err := decodeViolation(value); err != nil {
		return nil, fmt.Errorf("decode violation %s: %w", key, err)
	} else if v != nil {
		keep = statekey.IndexKeys(v)
	}
	var out [][]byte
	for _, k := range statekey.IndexKeys(prev) {
		if !slices.Contains(keep, k) {
			out = append(out, statekey.Stored(partition, k))
		}
	}
	return out, nil
}

// rebuildIndexes replaces the secondary keys of partition's violations by
// the keys of the violations stored: the derived index families are
// deleted, then every violation's keys written again. The forget index (ids
// of expired violations) is not derived from anything stored and is kept.
func (s *Store) rebuildIndexes(partition int32) error {
	del := s.db.NewWriteBatch()
	defer del.Cancel()
	for _, family := range statekey.DerivedIndexPrefixes {
		if err := s.eachKey(statekey.Stored(partition, family), func(k, _ []byte) error { return del.Delete(k) }); err != nil {
			return err
		}
	}
	if err := del.Flush(); err != nil {
		return err
	}
	set := s.db.NewWriteBatch()
	defer set.Cancel()
	err := s.eachKey(statekey.Stored(partition, statekey.Violation), func(k, b []byte) error {
		v, err := decodeViolation(b)
		if err != nil {
			return fmt.Errorf("decode violation %s: %w", strings.ToValidUTF8(statekey.Local(k), "?"), err)
		}
		if v == nil {
			return nil
		}
		for _, ik := range statekey.IndexKeys(v) {
			if err := set.Set(statekey.Stored(partition, ik), []byte{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return set.Flush()
}

// eachKey calls fn with a copy of every key with prefix and its value
// (valid during the call only).
func (s *Store) eachKey(prefix []byte, fn func(key, value []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.KeyCopy(nil)
			if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}
