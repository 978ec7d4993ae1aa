package alert

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/invmon/invmon/internal/kafkatest"
)

// TestMain stops the Alertmanagers the harness started, then fails the
// package if a test left goroutines behind (a Run loop, a retry, an HTTP
// connection).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(kafkatest.Wrap(m))
}
