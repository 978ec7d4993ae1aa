// Package statekey owns the layout of a partition's state keys: the key
// types, the time encoding that makes deadlines sort, the secondary keys of
// violations, and the stored form that puts the partition into each key.
// The engine builds keys with it and joinstate stores, scans, wipes and
// restores them with it; neither spells a key type of its own.
//
// Inside a partition every key starts with a two-byte key type. Times are
// big-endian unix nanoseconds with the sign bit flipped, so that they sort
// as unsigned bytes: "what is due up to W" is a range scan, and expiry is a
// range scan of the time-ordered keys.
//
// Changing anything here changes the bytes on disk and in the changelog:
// raise engine.StateFormat with it.
package statekey

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"time"
)

// Key types: the first TypeLen bytes of every key of a partition's state.
const (
	Rule      = "r/" // r/<rule id>/<kind key>/...: each rule kind's own keys (RulePrefix)
	Violation = "v/" // v/<violation id>: the violation record
	Stream    = "w/" // w/<stream>: newest event time seen
	Table     = "t/" // t/<stream>/<key>: latest event of an entity
	Index     = "i/" // i/...: secondary keys of violations (index.go)
)

// TypeLen is the length of a key type.
const TypeLen = 2

// Types lists every key type of a partition's state.
var Types = []string{Rule, Violation, Stream, Table, Index}

// RuleIDLen is the length of a RuleID.
const RuleIDLen = 8

// RuleID is the id under which a rule's state is kept: the 64-bit FNV-1a
// hash of its name, big-endian. Every state key of a rule starts with it,
// so every write, read, changelog record and compaction of the rule's
// state carries it: a name of 30 to 40 bytes was half the bytes of a
// typical key, and every key comparison in Badger's memtable walked it
// (state format 4 replaced the name; the five example rules took about a
// seventh less CPU per event). The id depends on the name only, so a rule
// finds its state again after a restart, a reload or a rule change that
// keeps its name, as it did by name. Names that share an id are refused
// where a partition's rules are laid out (engine.NewPartition).
func RuleID(name string) string {
	h := fnv.New64a()
	h.Write([]byte(name))
	return string(h.Sum(make([]byte, 0, RuleIDLen)))
}

// RulePrefix returns r/<rule id>/, the prefix of every key of the named
// rule's state.
func RulePrefix(name string) string { return Rule + RuleID(name) + "/" }

// TimeBytes encodes t so that byte order is time order.
func TimeBytes(t time.Time) []byte { return AppendTime(make([]byte, 0, 8), t) }

// AppendTime appends the encoding of TimeBytes to b: how keys are built in
// a reused buffer.
func AppendTime(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixNano())^(1<<63))
}

// Time decodes the first eight bytes of b, written by TimeBytes.
func Time(b []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(b)^(1<<63))).UTC()
}

// Until returns the exclusive end of a time-ordered scan under prefix that
// visits keys whose time is before t.
func Until(prefix string, t time.Time) string { return prefix + string(TimeBytes(t)) }

// CutLast splits "<key>\x00<id>" at its last NUL.
func CutLast(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == 0 {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

// PrefixEnd returns the first key after every key with prefix: a scan of
// [p, PrefixEnd(p)) visits exactly the keys with prefix p. It returns ""
// (no upper bound) for a prefix of 0xff bytes only.
func PrefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// Stored returns the key under which a partition's key is stored: the
// partition, big-endian, right after the key type, so that one partition's
// state of a type is a prefix scan and all violations of every partition
// are one too. key must be at least TypeLen long.
func Stored(partition int32, key string) []byte {
	return AppendStored(make([]byte, 0, len(key)+4), partition, key)
}

// AppendStored appends Stored(partition, key) to b: a reader that reuses
// its buffer builds keys without allocating.
func AppendStored(b []byte, partition int32, key string) []byte {
	b = append(b, key[:TypeLen]...)
	b = binary.BigEndian.AppendUint32(b, uint32(partition))
	return append(b, key[TypeLen:]...)
}

// storedLen is the length of a stored key's type and partition.
const storedLen = TypeLen + 4

// Local returns the partition's key of a stored key: Stored undone.
func Local(stored []byte) string {
	return string(stored[:TypeLen]) + string(stored[storedLen:])
}

// Partition returns the partition of a stored key.
func Partition(stored []byte) (int32, error) {
	if len(stored) < storedLen {
		return 0, fmt.Errorf("corrupt state key %q", stored)
	}
	return int32(binary.BigEndian.Uint32(stored[TypeLen:storedLen])), nil
}
