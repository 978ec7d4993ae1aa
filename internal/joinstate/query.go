package joinstate

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/invmon/invmon/internal/statekey"
	"github.com/invmon/invmon/internal/violation"
)

// Page sizes of the violations query.
const (
	// DefaultPageSize is the page size when a query sets none.
	DefaultPageSize = 100
	// MaxPageSize bounds one page: a page is read and encoded in one
	// request, and its cost must not grow with the number of violations.
	MaxPageSize = 1000
)

// ViolationReader is how the HTTP API and the console read violations: one
// by id, or a filtered page in detection order (newest first) with a cursor
// to the next page. Neither reads more than the page needs.
type ViolationReader interface {
	Violation(id string) (*violation.Violation, error)
	ViolationPage(q Query) (Page, error)
}

var _ ViolationReader = (*Store)(nil)

// Query selects a page of violations. Zero fields select everything.
type Query struct {
	Filter
	// Limit is the page size: DefaultPageSize when 0, at most MaxPageSize.
	Limit int
	// After is the Next of the previous page; empty for the first page.
	After string
}

// Page is one page of a query.
type Page struct {
	Violations []violation.Violation
	// Next fetches the following page; empty on the last one.
	Next string
	// KeysRead counts the index keys and records read for the page: what
	// the page cost, whatever the number of violations stored.
	KeysRead int
}

// ErrBadCursor is returned for an After that no page returned.
var ErrBadCursor = errors.New("malformed page cursor")

// Violation returns the violation with id, or nil when there is none. It
// reads one key per partition.
func (s *Store) Violation(id string) (*violation.Violation, error) {
	var out *violation.Violation
	err := s.db.View(func(txn *badger.Txn) error {
		spaces, err := partitionSpaces(txn)
		if err != nil {
			return err
		}
		out, err = violationIn(txn, spaces, id)
		return err
	})
	return out, err
}

// violationIn returns the violation with id from the first space that
// holds it, or nil.
func violationIn(txn *badger.Txn, spaces []space, id string) (*violation.Violation, error) {
	for _, sp := range spaces {
		item, err := txn.Get(sp.key(statekey.Violation + id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if item.ValueSize() == 0 {
			return nil, nil // expired: only its id is kept, for dedup
		}
		v := &violation.Violation{}
		if err := item.Value(func(b []byte) error { return json.Unmarshal(b, v) }); err != nil {
			return nil, fmt.Errorf("decode violation %s: %w", id, err)
		}
		return v, nil
	}
	return nil, nil
}

// space is one set of violations with their secondary keys, laid out by
// statekey: a partition's state, or the group view. key returns where a
// key of the layout is stored.
type space interface {
	key(local string) []byte
}

// partitionSpace is a partition's state: keys in statekey's stored form.
type partitionSpace int32

func (p partitionSpace) key(local string) []byte { return statekey.Stored(int32(p), local) }

// prefixSpace is a key space under a fixed prefix (the group view).
type prefixSpace string

func (p prefixSpace) key(local string) []byte { return []byte(string(p) + local) }

// partitionSpaces lists the spaces of every partition holding violations.
func partitionSpaces(txn *badger.Txn) ([]space, error) {
	parts, err := partitions(txn, statekey.Violation)
	if err != nil {
		return nil, err
	}
	out := make([]space, len(parts))
	for i, p := range parts {
		out[i] = partitionSpace(p)
	}
	return out, nil
}

// partitions lists the partitions that hold keys of a key type, with one
// seek per partition.
func partitions(txn *badger.Txn, keyType string) ([]int32, error) {
	var out []int32
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(keyType)})
	defer it.Close()
	seek := []byte(keyType)
	for it.Seek(seek); it.Valid(); it.Seek(seek) {
		p, err := statekey.Partition(it.Item().Key())
		if err != nil {
			return nil, err
		}
		out = append(out, p)
		if p == -1 {
			break // the last partition number there is
		}
		seek = statekey.Stored(p+1, keyType)
	}
	return out, nil
}

// cursor walks one index range of one space.
type cursor struct {
	it     *badger.Iterator
	space  space
	prefix []byte // stored prefix of the range, partition included
	tail   []byte // current key after prefix: detection order, then id
}

func (c *cursor) settle() {
	if c.it.ValidForPrefix(c.prefix) {
		c.tail = c.it.Item().Key()[len(c.prefix):]
	} else {
		c.tail = nil
	}
}

// ViolationPage returns one page of the violations that match q, newest
// detection first (ties by id). It walks the narrowest secondary index the
// filter allows, merging partitions, and reads only what the page needs
// (plus what a customer or time filter skips).
func (s *Store) ViolationPage(q Query) (Page, error) {
	var page Page
	err := s.db.View(func(txn *badger.Txn) error {
		spaces, err := partitionSpaces(txn)
		if err != nil {
			return err
		}
		page, err = pageIn(txn, spaces, q)
		return err
	})
	return page, err
}

// pageIn reads one page of q from spaces, merging their index ranges.
func pageIn(txn *badger.Txn, spaces []space, q Query) (Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	var after []byte
	if q.After != "" {
		b, err := base64.RawURLEncoding.DecodeString(q.After)
		if err != nil || len(b) < 8 {
			return Page{}, ErrBadCursor
		}
		after = b
	}
	var ranges []string
	switch {
	case q.Customer != "" && q.IDMatch == nil:
		// With IDMatch the query may be a token, not the stored id.
		ranges = []string{statekey.CustomerPrefix(q.Customer)}
	case q.Rule != "" && q.State != "":
		ranges = []string{statekey.RuleStatePrefix(q.Rule, q.State)}
	case q.Rule != "":
		ranges = []string{statekey.RuleStatePrefix(q.Rule, violation.Open), statekey.RuleStatePrefix(q.Rule, violation.Resolved)}
	default:
		ranges = []string{statekey.IndexByDetected}
	}
	var page Page
	err := func() error {
		var cs []*cursor
		defer func() {
			for _, c := range cs {
				c.it.Close()
			}
		}()
		// Newest first: index keys order by detection time inverted.
		var start []byte
		if !q.Until.IsZero() {
			start = statekey.DetectedOrder(q.Until.Add(-time.Nanosecond))
		}
		if after != nil && bytes.Compare(after, start) > 0 {
			start = after
		}
		for _, sp := range spaces {
			for _, r := range ranges {
				prefix := sp.key(r)
				c := &cursor{it: txn.NewIterator(badger.IteratorOptions{Prefix: prefix}), space: sp, prefix: prefix}
				cs = append(cs, c)
				c.it.Seek(append(bytes.Clone(prefix), start...))
				c.settle()
				if after != nil && c.tail != nil && bytes.Equal(c.tail, after) {
					c.it.Next()
					c.settle()
				}
			}
		}
		var sinceKey []byte
		if !q.Since.IsZero() {
			sinceKey = statekey.DetectedOrder(q.Since)
		}
		for len(page.Violations) < limit {
			var best *cursor
			for _, c := range cs {
				if c.tail != nil && (best == nil || bytes.Compare(c.tail, best.tail) < 0) {
					best = c
				}
			}
			if best == nil {
				page.Next = "" // every range is exhausted: this is the last page
				return nil
			}
			page.KeysRead++
			tail := bytes.Clone(best.tail)
			if sinceKey != nil && bytes.Compare(tail[:8], sinceKey) > 0 {
				page.Next = ""
				return nil // older than since: so is everything after it
			}
			best.it.Next()
			best.settle()
			id := string(tail[8:])
			item, err := txn.Get(best.space.key(statekey.Violation + id))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue // expired between index and record: not in the page
			}
			if err != nil {
				return err
			}
			page.KeysRead++
			var v violation.Violation
			if err := item.Value(func(b []byte) error { return json.Unmarshal(b, &v) }); err != nil {
				return fmt.Errorf("decode violation %s: %w", id, err)
			}
			if !q.Filter.match(&v) {
				continue
			}
			page.Violations = append(page.Violations, v)
			page.Next = base64.RawURLEncoding.EncodeToString(tail)
		}
		// The page is full; it is the last when no cursor has more.
		for _, c := range cs {
			if c.tail != nil {
				return nil
			}
		}
		page.Next = ""
		return nil
	}()
	return page, err
}
