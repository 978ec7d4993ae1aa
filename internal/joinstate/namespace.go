package joinstate

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// Namespace is a key space of its own in the monitor's database, for a
// package that keeps durable records apart from the join state (the alert
// manager keeps its sent alerts under "alert/"). Its keys are stored with
// the namespace's prefix, which no state key type shares.
type Namespace struct {
	db     *badger.DB
	prefix string
}

// AlertNamespace is the prefix of the alert manager's records.
const AlertNamespace = "alert/"

// Namespace returns the key space under prefix. The prefix must not start
// with a state key type ("r/", "v/", …) or another namespace's prefix.
func (s *Store) Namespace(prefix string) *Namespace {
	return &Namespace{db: s.db, prefix: prefix}
}

// Write sets every key to its value, or deletes it when the value is nil,
// in one transaction synced to disk before it returns (Badger syncs a commit
// only when asked, and a namespace's records must survive SIGKILL).
func (n *Namespace) Write(changes map[string][]byte) error {
	if len(changes) == 0 {
		return nil
	}
	err := n.db.Update(func(txn *badger.Txn) error {
		for k, v := range changes {
			var err error
			if v == nil {
				err = txn.Delete([]byte(n.prefix + k))
			} else {
				err = txn.Set([]byte(n.prefix+k), v)
			}
			if err != nil {
				return fmt.Errorf("write %s%s: %w", n.prefix, k, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return n.db.Sync()
}

// Scan calls fn with every key of the namespace that starts with prefix
// (the namespace's own prefix removed), in key order, and its value, valid
// during the call only.
func (n *Namespace) Scan(prefix string, fn func(key string, value []byte) error) error {
	return n.db.View(func(txn *badger.Txn) error {
		p := []byte(n.prefix + prefix)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := strings.TrimPrefix(string(item.Key()), n.prefix)
			if err := item.Value(func(v []byte) error { return fn(key, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// eachOpenIn calls fn with every open violation of rule in spaces: a walk
// of their rule-and-state index, reading one violation at a time.
func eachOpenIn(txn *badger.Txn, spaces []space, rule string, fn func(*violation.Violation) error) error {
	for _, sp := range spaces {
		if err := eachOpenOf(txn, sp, rule, fn); err != nil {
			return err
		}
	}
	return nil
}

func eachOpenOf(txn *badger.Txn, sp space, rule string, fn func(*violation.Violation) error) error {
	prefix := sp.key(statekey.RuleStatePrefix(rule, violation.Open))
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		tail := it.Item().Key()[len(prefix):]
		if len(tail) < 8 {
			return fmt.Errorf("corrupt index key %q", it.Item().Key())
		}
		id := string(tail[8:])
		item, err := txn.Get(sp.key(statekey.Violation + id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		var v *violation.Violation
		if err := item.Value(func(b []byte) error {
			v, err = decodeViolation(b)
			return err
		}); err != nil {
			return fmt.Errorf("decode violation %s: %w", id, err)
		}
		if v == nil || v.State != violation.Open {
			continue
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}
