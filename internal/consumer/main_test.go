package consumer

import (
	"testing"

	"github.com/invmon/invmon/internal/kafkatest"
)

// TestMain stops the shared Kafka broker the fault tests start.
func TestMain(m *testing.M) { kafkatest.Main(m) }
