package alert

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/invmon/invmon/internal/violation"
)

// Store is the manager's own durable key space: its alert state and active
// conditions live there, apart from the join state (joinstate.Namespace
// implements it over the monitor's Badger database).
type Store interface {
	// Write sets every key of changes to its value, or deletes it when the
	// value is nil, in one transaction that is synced before Write returns.
	Write(changes map[string][]byte) error
	// Scan calls fn with every key that starts with prefix, in key order,
	// and its value (valid during the call only). It stops at fn's first
	// error and returns it.
	Scan(prefix string, fn func(key string, value []byte) error) error
}

// OpenViolations is where the manager reads a rule's open violations when
// it builds or refreshes the rule's alert, so it keeps no copy of them
// (joinstate.GroupView, the group's violations, implements it with its
// rule-and-state index; Violations is a list held anyway).
type OpenViolations interface {
	// EachOpen calls fn with every open violation of rule. It stops at fn's
	// first error and returns it.
	EachOpen(rule string, fn func(*violation.Violation) error) error
}

// Keys in the manager's Store.
const (
	stateKeyPrefix  = "state/" // state/<fingerprint> → alertState
	condKeyPrefix   = "cond/"  // cond/<fingerprint> → desiredAlert
	persistedFormat = 1
)

// store persists alert state. Every write is synced before it returns: the
// point of persisting is surviving SIGKILL, and alert state changes rarely
// (a firing, a resolution, a successful send).
type store struct {
	kv Store
}

type record struct {
	key   string
	value any // nil deletes key
}

func (s store) write(recs []record) error {
	if len(recs) == 0 {
		return nil
	}
	changes := make(map[string][]byte, len(recs))
	for _, r := range recs {
		if r.value == nil {
			changes[r.key] = nil
			continue
		}
		b, err := json.Marshal(r.value)
		if err != nil {
			return fmt.Errorf("persist alert state: encode %s: %w", r.key, err)
		}
		changes[r.key] = b
	}
	if err := s.kv.Write(changes); err != nil {
		return fmt.Errorf("persist alert state: %w", err)
	}
	return nil
}

// load calls fn with every value under prefix, decoded into a fresh T.
func load[T any](kv Store, prefix string, fn func(key string, v *T)) error {
	return kv.Scan(prefix, func(key string, b []byte) error {
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("load %s: %w", key, err)
		}
		fn(key, &v)
		return nil
	})
}

var (
	errNoStore  = errors.New("alert manager needs a store")
	errNoSource = errors.New("alert manager needs a source of open violations")
)

// Violations is a source of open violations over a list the caller holds
// anyway (a replay's findings).
type Violations []violation.Violation

// EachOpen calls fn with every open violation of rule in the list.
func (l Violations) EachOpen(rule string, fn func(*violation.Violation) error) error {
	for i := range l {
		if l[i].Rule == rule && l[i].State == violation.Open {
			if err := fn(&l[i]); err != nil {
				return err
			}
		}
	}
	return nil
}
