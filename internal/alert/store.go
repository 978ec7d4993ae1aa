package alert

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Badger keys. Everything this package writes lives under "alert/", so it
// can share the monitor's database with the join state.
const (
	keyPrefix       = "alert/"
	stateKeyPrefix  = keyPrefix + "state/" // alert/state/<fingerprint> → alertState
	condKeyPrefix   = keyPrefix + "cond/"  // alert/cond/<fingerprint> → desiredAlert
	persistedFormat = 1
)

// store persists alert state in Badger. Every write is synced before it
// returns: the point of persisting is surviving SIGKILL, and alert state
// changes rarely (a firing, a resolution, a successful send).
type store struct {
	db *badger.DB
}

type record struct {
	key   string
	value any // nil deletes key
}

func (s store) write(recs []record) error {
	if len(recs) == 0 {
		return nil
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		for _, r := range recs {
			if r.value == nil {
				if err := txn.Delete([]byte(r.key)); err != nil {
					return fmt.Errorf("delete %s: %w", r.key, err)
				}
				continue
			}
			b, err := json.Marshal(r.value)
			if err != nil {
				return fmt.Errorf("encode %s: %w", r.key, err)
			}
			if err := txn.Set([]byte(r.key), b); err != nil {
				return fmt.Errorf("set %s: %w", r.key, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("persist alert state: %w", err)
	}
	// Update only syncs when the DB was opened with SyncWrites; alert state
	// must be durable either way.
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("persist alert state: sync: %w", err)
	}
	return nil
}

// load calls fn with every value under prefix, decoded into a fresh T.
func load[T any](db *badger.DB, prefix string, fn func(key string, v *T)) error {
	return db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := string(item.Key())
			var v T
			if err := item.Value(func(b []byte) error { return json.Unmarshal(b, &v) }); err != nil {
				return fmt.Errorf("load %s: %w", key, err)
			}
			fn(key, &v)
		}
		return nil
	})
}

var errNoDB = errors.New("alert manager needs a badger database")
