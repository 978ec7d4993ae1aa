package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/violation"
)

// A resolved violation is deleted once its retention has passed (by the
// clock), secondary keys and all, while an open one stays. Its id is kept
// for the dedup horizon (one more retention): the same trigger read again
// then, after every expect event is forgotten, does not record it again.
func TestResolvedViolationExpiresAndItsTriggerStaysDeduplicated(t *testing.T) {
	h := newHarness(t)
	h.p.SetViolationRetention(24 * time.Hour)
	for _, topic := range h.p.Topics() {
		h.p.SetCaughtUp(topic, true)
	}
	h.payment("p1", "captured", t0)
	h.payment("p2", "captured", t0)
	h.ledger("x", t0.Add(time.Minute))
	h.advance(time.Minute)
	h.expect(map[string]violation.State{"p1": violation.Open, "p2": violation.Open})
	h.ledger("p1", t0.Add(45*time.Second)) // late: resolves p1
	h.advance(time.Second)
	h.expect(map[string]violation.State{"p1": violation.Resolved, "p2": violation.Open})

	h.advance(23 * time.Hour)
	h.expect(map[string]violation.State{"p1": violation.Resolved, "p2": violation.Open})
	h.advance(2 * time.Hour) // past the retention of p1's resolution
	h.expect(map[string]violation.State{"p2": violation.Open})
	index := 0
	_ = h.snap.Scan("i/", "", func(k string, _ []byte) bool {
		if strings.HasPrefix(k, "i/s/") || strings.HasPrefix(k, "i/d/") || strings.HasPrefix(k, "i/c/") || strings.HasPrefix(k, "i/e/") {
			index++
		}
		return true
	})
	if index != 3 { // p2's: rule and state, detection order, customer
		t.Fatalf("%d secondary keys left, want p2's 3", index)
	}

	// The payment's capture is read again (a producer's retry): the ledger
	// entry that met it is long forgotten, yet no violation comes back.
	h.payment("p1", "captured", t0)
	h.advance(time.Hour)
	h.reload()
	h.advance(time.Hour)
	h.expect(map[string]violation.State{"p2": violation.Open})
	if n := h.p.PendingCount(); n != 0 {
		t.Fatalf("the re-read trigger waits as pending (%d)", n)
	}

	// Past the dedup horizon the id is forgotten too: nothing of p1 is left.
	h.advance(24 * time.Hour)
	left := 0
	_ = h.snap.Scan("", "", func(k string, _ []byte) bool {
		if strings.HasPrefix(k, "v/") || strings.HasPrefix(k, "i/g/") {
			left++
		}
		return true
	})
	if left != 1 { // p2's record
		t.Fatalf("%d violation keys left, want p2's record only", left)
	}
}
