package alert

import (
	"context"
	"testing"
	"time"
)

func TestRunTicksUntilCancelled(t *testing.T) {
	am := newRecorder(t)
	cfg := testConfig(newClock(), am.URL())
	cfg.Now = time.Now
	cfg.EvalInterval = 10 * time.Millisecond
	m := readyManager(t, cfg, memDB(t))
	m.Observe(openViolation(ruleName, "pay-1", "acct-1", 100))

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for am.requests() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	a := only(t, am.takeOne(t))
	if a.Labels["alertname"] != ruleName {
		t.Fatalf("Run sent %+v", a)
	}
}
