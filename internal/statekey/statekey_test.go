package statekey

import (
	"bytes"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/violation"
)

// The bytes below are on disk and in changelogs of StateFormat 2: a change
// here must come with a new format.
func TestStoredLayoutIsStable(t *testing.T) {
	got := Stored(258, Violation+"abc")
	want := []byte("v/\x00\x00\x01\x02abc")
	if !bytes.Equal(got, want) {
		t.Fatalf("Stored = %q, want %q", got, want)
	}
	if Local(got) != "v/abc" {
		t.Errorf("Local = %q", Local(got))
	}
	if p, err := Partition(got); err != nil || p != 258 {
		t.Errorf("Partition = %d, %v", p, err)
	}
	if _, err := Partition([]byte("v/\x00")); err == nil {
		t.Error("a key shorter than type and partition gave no error")
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if got, want := TimeBytes(at), []byte{0x98, 0x86, 0xca, 0xf2, 0x1c, 0x96, 0x32, 0x06}; !bytes.Equal(got, want) {
		t.Errorf("TimeBytes = % x, want % x", got, want)
	}
}

func TestTimeBytesSortInTimeOrder(t *testing.T) {
	times := []time.Time{time.Unix(-5, 0), time.Unix(0, 0), time.Unix(0, 1), time.Unix(1e9, 0)}
	for i := 1; i < len(times); i++ {
		if bytes.Compare(TimeBytes(times[i-1]), TimeBytes(times[i])) >= 0 {
			t.Errorf("%v does not sort before %v", times[i-1], times[i])
		}
		if !Time(TimeBytes(times[i])).Equal(times[i]) {
			t.Errorf("round trip of %v gave %v", times[i], Time(TimeBytes(times[i])))
		}
	}
	if d := DetectedOrder(times[3]); bytes.Compare(d, DetectedOrder(times[2])) >= 0 {
		t.Error("DetectedOrder does not list the newer time first")
	}
}

func TestPrefixEndBoundsExactlyThePrefix(t *testing.T) {
	for _, c := range []struct{ prefix, end string }{{"v/", "v0"}, {"a\xff", "b"}, {"\xff\xff", ""}} {
		if got := PrefixEnd(c.prefix); got != c.end {
			t.Errorf("PrefixEnd(%q) = %q, want %q", c.prefix, got, c.end)
		}
	}
}

func TestIndexKeysOfAResolvedViolation(t *testing.T) {
	at := time.Unix(100, 0)
	v := &violation.Violation{ID: "id1", Rule: "r1", State: violation.Resolved, Customer: "c1", DetectedAt: at, ResolvedAt: &at}
	keys := IndexKeys(v)
	want := []string{
		RuleStatePrefix("r1", violation.Resolved) + string(DetectedOrder(at)) + "id1",
		IndexByDetected + string(DetectedOrder(at)) + "id1",
		CustomerPrefix("c1") + string(DetectedOrder(at)) + "id1",
		IndexResolved + string(TimeBytes(at)) + "id1",
	}
	if len(keys) != len(want) {
		t.Fatalf("IndexKeys = %q, want %q", keys, want)
	}
	for i := range want {
		if keys[i] != want[i] {
			t.Errorf("key %d = %q, want %q", i, keys[i], want[i])
		}
	}
	if k, id, ok := CutLast("a\x00b\x00id"); !ok || k != "a\x00b" || id != "id" {
		t.Errorf("CutLast = %q %q %v", k, id, ok)
	}
}

// A rule's id is on disk and in changelogs (state format 4): the bytes of
// FNV-1a 64 of the name, so the same name finds the same state in any build.
func TestRuleIDIsTheNamesFixedLengthHash(t *testing.T) {
	if got, want := RuleID("captured_payment_has_ledger_entry"), "\xa1\x9d6\x10\x97\xe6\xa8("; got != want {
		t.Fatalf("RuleID = %q, want %q", got, want)
	}
	if got, want := RulePrefix("captured_payment_has_ledger_entry"), "r/\xa1\x9d6\x10\x97\xe6\xa8(/"; got != want {
		t.Fatalf("RulePrefix = %q, want %q", got, want)
	}
	seen := map[string]string{}
	for _, name := range []string{"a", "captured_payment_has_ledger_entry", "no_duplicate_ledger_effect",
		"payment_transitions_allowed", "fulfilled_order_has_captured_payment", "active_subscription_has_valid_entitlement"} {
		id := RuleID(name)
		if len(id) != RuleIDLen {
			t.Errorf("RuleID(%q) is %d bytes, want %d", name, len(id), RuleIDLen)
		}
		if other, ok := seen[id]; ok {
			t.Errorf("%q and %q share id %q", name, other, id)
		}
		seen[id] = name
	}
}
