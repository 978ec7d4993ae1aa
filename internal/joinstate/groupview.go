package joinstate

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// GroupView is the consumer group's violations as this member has read them
// from the group's stream of violation changes (package changes): every
// member's, not only those of the partitions this member owns. It is a key
// space of its own in the monitor's database, laid out like a partition's
// violations (statekey: the record under v/<id> and its secondary keys), so
// that open violations per rule are a prefix scan of the rule-and-state
// index (EachOpen, what the alert manager aggregates) and the API's pages
// are read as from the state (ViolationPage). With the records it keeps the
// stream offset it has read up to, written in the same transaction, so a
// restart resumes where the view stands.
type GroupView struct {
	db *badger.DB
}

// groupViewPrefix is the prefix of every key of the group view. No state
// key type, namespace or other key of the database starts with it.
const groupViewPrefix = prefixSpace("gv/")

// groupViewNext holds the next stream offset to read (big-endian uint64).
var groupViewNext = groupViewPrefix.key("meta/next")

// GroupView returns the group view kept in the store.
func (s *Store) GroupView() *GroupView { return &GroupView{db: s.db} }

var _ ViolationReader = (*GroupView)(nil)

// Next returns the offset of the group's stream the view has read up to:
// the next record to read; 0 for a view that has read nothing.
func (g *GroupView) Next() (int64, error) {
	var next int64
	err := g.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(groupViewNext)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			if len(b) != 8 {
				return fmt.Errorf("corrupt group view offset")
			}
			next = int64(binary.BigEndian.Uint64(b))
			return nil
		})
	})
	return next, err
}

// Apply writes changes read from the stream, in stream order, and next, the
// offset after the last of them, in one transaction (split, with next in
// the last part, when too big for one: a crash in between re-reads changes
// that are then duplicates). The latest change of a violation replaces its
// record and secondary keys. A change equal to the stored record (a change
// produced again after a crash, or read again after a restart) changes
// nothing. Apply returns the changes that changed the view.
func (g *GroupView) Apply(next int64, changes []violation.Violation) ([]violation.Violation, error) {
	txn := g.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	write := func(k, v []byte, del bool) error {
		op := func() error {
			if del {
				return txn.Delete(k)
			}
			return txn.Set(k, v)
		}
		err := op()
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err := txn.Commit(); err != nil {
				return err
			}
			txn = g.db.NewTransaction(true)
			err = op()
		}
		return err
	}
	var changed []violation.Violation
	for i := range changes {
		v := &changes[i]
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("group view: encode violation %s: %w", v.ID, err)
		}
		key := groupViewPrefix.key(statekey.Violation + v.ID)
		prev, err := storedViolation(txn, key)
		if err != nil {
			return nil, fmt.Errorf("group view: %w", err)
		}
		if prev != nil && bytes.Equal(prev.raw, b) {
			continue
		}
		keep := statekey.IndexKeys(v)
		if prev != nil {
			for _, k := range statekey.IndexKeys(prev.v) {
				if !slices.Contains(keep, k) {
					if err := write(groupViewPrefix.key(k), nil, true); err != nil {
						return nil, fmt.Errorf("group view: %w", err)
					}
				}
			}
		}
		for _, k := range keep {
			if err := write(groupViewPrefix.key(k), []byte{}, false); err != nil {
				return nil, fmt.Errorf("group view: %w", err)
			}
		}
		if err := write(key, b, false); err != nil {
			return nil, fmt.Errorf("group view: %w", err)
		}
		changed = append(changed, *v)
	}
	if err := write(groupViewNext, binary.BigEndian.AppendUint64(nil, uint64(next)), false); err != nil {
		return nil, fmt.Errorf("group view: %w", err)
	}
	if err := txn.Commit(); err != nil {
		return nil, fmt.Errorf("group view: commit: %w", err)
	}
	return changed, nil
}

// stored is a violation record as stored, and decoded.
type stored struct {
	raw []byte
	v   *violation.Violation
}

// storedViolation reads the record at key; nil when there is none.
func storedViolation(txn *badger.Txn, key []byte) (*stored, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	raw, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	v, err := decodeViolation(raw)
	if err != nil || v == nil {
		return nil, fmt.Errorf("decode violation %q: %v", key, err)
	}
	return &stored{raw: raw, v: v}, nil
}

// Expire deletes the violations resolved before before, with their
// secondary keys, and returns how many: the group view keeps resolved
// violations as long as the state does (state.violation_retention), not
// for as long as the compacted stream holds them.
func (g *GroupView) Expire(before time.Time) (int, error) {
	var ids []string
	prefix := groupViewPrefix.key(statekey.IndexResolved)
	end := groupViewPrefix.key(statekey.Until(statekey.IndexResolved, before))
	err := g.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid() && bytes.Compare(it.Item().Key(), end) < 0; it.Next() {
			tail := it.Item().Key()[len(prefix):]
			if len(tail) < 8 {
				return fmt.Errorf("corrupt index key %q", it.Item().Key())
			}
			ids = append(ids, string(tail[8:]))
		}
		return nil
	})
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	wb := g.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	err = g.db.View(func(txn *badger.Txn) error {
		for _, id := range ids {
			key := groupViewPrefix.key(statekey.Violation + id)
			prev, err := storedViolation(txn, key)
			if err != nil {
				return err
			}
			if prev == nil {
				continue
			}
			for _, k := range statekey.IndexKeys(prev.v) {
				if err := wb.Delete(groupViewPrefix.key(k)); err != nil {
					return err
				}
			}
			if err := wb.Delete(key); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("group view: expire: %w", err)
	}
	if err := wb.Flush(); err != nil {
		return 0, fmt.Errorf("group view: expire: %w", err)
	}
	return n, nil
}

// Reset empties the view and its offset: the next Follow reads the stream
// from its start (for a stream that no longer holds what the view read,
// such as a topic deleted and created again).
func (g *GroupView) Reset() error {
	return g.db.DropPrefix([]byte(groupViewPrefix))
}

// EachOpen calls fn with every open violation of rule in the view: a walk
// of its rule-and-state index, reading one violation at a time. It stops at
// fn's first error and returns it.
func (g *GroupView) EachOpen(rule string, fn func(*violation.Violation) error) error {
	return g.db.View(func(txn *badger.Txn) error {
		return eachOpenIn(txn, []space{groupViewPrefix}, rule, fn)
	})
}

// Violation returns the violation with id, or nil when the view has none.
func (g *GroupView) Violation(id string) (*violation.Violation, error) {
	var out *violation.Violation
	err := g.db.View(func(txn *badger.Txn) error {
		var err error
		out, err = violationIn(txn, []space{groupViewPrefix}, id)
		return err
	})
	return out, err
}

// ViolationPage returns one page of the view's violations that match q,
// newest detection first, as Store.ViolationPage does for the state.
func (g *GroupView) ViolationPage(q Query) (Page, error) {
	var page Page
	err := g.db.View(func(txn *badger.Txn) error {
		var err error
		page, err = pageIn(txn, []space{groupViewPrefix}, q)
		return err
	})
	return page, err
}

// Violations lists every violation of the view that matches f, newest
// detection first (all of them: for tools and tests, not the API).
func (g *GroupView) Violations(f Filter) ([]violation.Violation, error) {
	return AllViolations(g, f)
}
