package monitor

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/config"
)

// KafkaOpts returns the franz-go options (TLS, SASL) the monitor's own Kafka
// clients use for k, so that other commands, such as replay, reach the
// cluster exactly as `monitor run` does with the same configuration file.
func KafkaOpts(k config.Kafka) ([]kgo.Opt, error) { return kafkaOpts(k) }
