package joinstate

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/invmon/invmon/internal/violation"
)

// Outbox keys: x/<seq> holds one violation change to publish, in commit
// order. They are written in the same Badger transaction as the state change
// that made them, so a change is published if and only if it happened.
var outboxPrefix = []byte("x/")

// OutboxEntry is one violation change waiting to be published.
type OutboxEntry struct {
	Seq uint64 `json:"-"`
	// Event is "opened" or "resolved".
	Event     string              `json:"event"`
	Violation violation.Violation `json:"violation"`
}

func outboxKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), outboxPrefix...), seq)
}

// EnableOutbox makes every later Commit also queue its violation changes
// for publication.
func (s *Store) EnableOutbox() error {
	next := uint64(1)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: outboxPrefix, Reverse: true})
		defer it.Close()
		// Reverse iteration seeks to the largest key below the prefix's end.
		it.Seek(append(append([]byte(nil), outboxPrefix...), 0xff))
		if it.ValidForPrefix(outboxPrefix) {
			next = binary.BigEndian.Uint64(it.Item().Key()[len(outboxPrefix):]) + 1
		}
		return nil
	})
	if err != nil {
		return err
	}
	if last, err := s.meta("outbox-published"); err == nil && len(last) == 8 {
		next = max(next, binary.BigEndian.Uint64(last)+1)
	}
	s.outboxNext = next
	s.outbox = true
	return nil
}

// outboxEntries renders the violation changes of a commit as outbox records.
func (s *Store) outboxEntries(deltas []PartitionDelta) ([][2][]byte, error) {
	if !s.outbox {
		return nil, nil
	}
	var out [][2][]byte
	for _, pd := range deltas {
		if pd.Delta == nil {
			continue
		}
		for _, v := range pd.Delta.Changed {
			e := OutboxEntry{Event: "opened", Violation: v}
			if v.State == violation.Resolved {
				e.Event = "resolved"
			}
			b, err := json.Marshal(e)
			if err != nil {
				return nil, fmt.Errorf("encode outbox entry: %w", err)
			}
			out = append(out, [2][]byte{outboxKey(s.outboxNext), b})
			s.outboxNext++
		}
	}
	return out, nil
}

// Outbox returns up to max entries waiting for publication, oldest first.
func (s *Store) Outbox(max int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: outboxPrefix, PrefetchValues: true})
		defer it.Close()
		for it.Seek(outboxPrefix); it.ValidForPrefix(outboxPrefix) && len(out) < max; it.Next() {
			var e OutboxEntry
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &e) }); err != nil {
				return fmt.Errorf("decode outbox entry: %w", err)
			}
			e.Seq = binary.BigEndian.Uint64(it.Item().Key()[len(outboxPrefix):])
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// OutboxDone removes every entry up to and including seq: they are published.
func (s *Store) OutboxDone(seq uint64) error {
	entries, err := s.Outbox(1 << 30)
	if err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, e := range entries {
		if e.Seq > seq {
			break
		}
		if err := wb.Delete(outboxKey(e.Seq)); err != nil {
			return err
		}
	}
	if err := wb.Set([]byte("meta/outbox-published"), binary.BigEndian.AppendUint64(nil, seq)); err != nil {
		return err
	}
	return wb.Flush()
}

// MemberID returns this state directory's stable identity, made once: it
// names the member's transactional producer, so a restart fences its
// predecessor instead of publishing beside it.
func (s *Store) MemberID() (string, error) {
	if id, err := s.meta("member-id"); err == nil {
		return string(id), nil
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return "", err
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("meta/member-id"), []byte(id)) })
	return id, err
}

func (s *Store) meta(name string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte("meta/" + name))
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	return out, err
}
