package bench

import (
	"testing"
	"time"
)

// TestStateLivePhaseFindsExactlyTheInjectedAbsences runs a small state
// benchmark with a short live phase (within and lateness shortened so the
// injected deadlines come due in seconds): the violations recorded live must
// be exactly the injected absences, each with a measured delay. The delay's
// value is printed, never asserted.
func TestStateLivePhaseFindsExactlyTheInjectedAbsences(t *testing.T) {
	res, err := State(t.TempDir(), 20_000, 4, 500, 0, nil, LiveOptions{
		Duration: 2 * time.Second, MissingEvery: 50,
		Within: time.Second, Lateness: 500 * time.Millisecond, Warmup: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	l := res.Live
	if l == nil {
		t.Fatal("no live result")
	}
	t.Logf("live: %.0f events/s paced, %d events, %d injected, delay p50 %s p99 %s max %s, warm-up %s, largest lag %s",
		l.Rate, l.Events, l.Injected, l.Quantile(0.5), l.Quantile(0.99), l.Quantile(1), l.Warmup, l.MaxLag)
	if l.Injected == 0 {
		t.Fatal("no absence was injected")
	}
	if len(l.Missing) > 0 || len(l.Unexpected) > 0 {
		t.Fatalf("%d injected absences missing (first %v), %d unexpected violations (first %v)",
			len(l.Missing), l.Missing[:min(5, len(l.Missing))], len(l.Unexpected), l.Unexpected[:min(5, len(l.Unexpected))])
	}
	if len(l.Delays) != l.Injected || !l.Exact() {
		t.Fatalf("%d delays measured for %d injected absences", len(l.Delays), l.Injected)
	}
	// The figure measured is wall time past deadline + lateness; a
	// violation can only be recorded once its deadline + lateness has passed.
	if l.Delays[0] < 0 {
		t.Fatalf("a violation recorded %s before its deadline + lateness", -l.Delays[0])
	}
}
