// Package config reads the monitor's configuration file.
//
// Every setting can also be given as a flag (see cmd/monitor); flags win.
// `${NAME}` in the file is replaced by the environment variable NAME, so
// secrets such as SASL passwords stay out of the file.
package config

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the monitor's configuration.
type Config struct {
	Kafka Kafka `yaml:"kafka"`
	// StateDir holds the Badger state. Default "./invmon-state".
	StateDir string `yaml:"state_dir"`
	// RuleFiles are globs of rule files. Required.
	RuleFiles    []string     `yaml:"rule_files"`
	HTTP         HTTP         `yaml:"http"`
	Alertmanager Alertmanager `yaml:"alertmanager"`
}

// Kafka configures the cluster connection and the consumer group.
type Kafka struct {
	// Brokers are the seed brokers. Required.
	Brokers []string `yaml:"brokers"`
	// Group is the consumer group. Default "invmon".
	Group string `yaml:"group"`
	// ClientID names the client. Default "invmon".
	ClientID string `yaml:"client_id"`
	// DLQTopic receives poison records. Default "<group>.dlq".
	DLQTopic string `yaml:"dlq_topic"`
	// Changelog appends every state write to the compacted topic
	// "<group>.changelog", so that a member that gains a partition (after a
	// rebalance, or on a new machine) restores its state. Default true.
	Changelog bool `yaml:"changelog"`
	// ViolationsTopic, when set, receives every violation and resolution
	// exactly once (keyed by violation id), for downstream repair workflows.
	// Default none.
	ViolationsTopic string `yaml:"violations_topic"`
	// InstanceID, when set, makes this member a static group member: a
	// restarted process with the same id takes its partitions back at once
	// instead of waiting out the session timeout. Default none (dynamic).
	InstanceID string `yaml:"instance_id"`
	TLS        TLS    `yaml:"tls"`
	SASL       SASL   `yaml:"sasl"`
}

// TLS configures TLS to the brokers. Default off.
type TLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASL configures SASL authentication. Mechanism is one of PLAIN,
// SCRAM-SHA-256, SCRAM-SHA-512; empty disables SASL (the default).
type SASL struct {
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// HTTP configures the monitor's HTTP server.
type HTTP struct {
	// Listen is the address of /metrics, the health checks and the API.
	// Default ":8080".
	Listen string `yaml:"listen"`
	// ExternalURL is how users reach the monitor; alert links point there.
	// Default "http://localhost:8080".
	ExternalURL string `yaml:"external_url"`
	// WebConfigFile is a Prometheus exporter-toolkit web configuration
	// (the file Prometheus and Alertmanager take as --web.config.file): TLS,
	// client certificates, bcrypt basic-auth users, response headers, a
	// rate limit. Every path needs the credentials it asks for, except the
	// health checks when OpenHealthChecks is set. Default "": plain HTTP
	// without authentication (a warning is logged when the address is not
	// loopback).
	WebConfigFile string `yaml:"web_config_file"`
	// OpenHealthChecks serves /healthz and /readyz without basic auth, for
	// probes that carry no credentials. They say only "ok" or "ready". A
	// required client certificate still applies. Default false.
	OpenHealthChecks bool `yaml:"open_health_checks"`
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request. Default 30s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing a response. Default 1m.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes kept-alive connections idle this long. Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes limits the size of a request's headers. Default 65536.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// Alertmanager configures where alerts go.
type Alertmanager struct {
	// URLs of every Alertmanager of an HA pair or cluster; each receives every
	// alert. Empty disables alerting.
	URLs []string `yaml:"urls"`
	// ResendInterval is how often firing alerts are re-sent. Default 1m.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// BearerToken authenticates to Alertmanager. Default none.
	BearerToken string `yaml:"bearer_token"`
	// BasicAuth authenticates to Alertmanager. Default none.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// Defaults returns a configuration with every default set.
func Defaults() Config {
	return Config{
		Kafka:    Kafka{Group: "invmon", ClientID: "invmon", Changelog: true},
		StateDir: "./invmon-state",
		HTTP: HTTP{Listen: ":8080", ExternalURL: "http://localhost:8080",
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10},
		Alertmanager: Alertmanager{ResendInterval: time.Minute},
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Load reads a configuration file over the defaults. Unknown fields are
// errors, so a misspelt setting is not silently ignored.
func Load(path string) (Config, error) {
	cfg := Defaults()
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	// Expand ${NAME} in values only: a comment that mentions ${VAR} must not
	// need the variable set.
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	var missing []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
				name := envRef.FindStringSubmatch(m)[1]
				v, ok := os.LookupEnv(name)
				if !ok {
					missing = append(missing, name)
				}
				return v
			})
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&root)
	if len(missing) > 0 {
		return cfg, fmt.Errorf("config %s: environment variables not set: %v", path, missing)
	}
	if len(root.Content) == 0 {
		return cfg, nil
	}
	expanded, err := yaml.Marshal(&root)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	switch {
	case len(c.Kafka.Brokers) == 0:
		return fmt.Errorf("config: kafka.brokers is required")
	case len(c.RuleFiles) == 0:
		return fmt.Errorf("config: rule_files is required")
	case c.StateDir == "":
		return fmt.Errorf("config: state_dir is required")
	case c.Alertmanager.ResendInterval <= 0:
		return fmt.Errorf("config: alertmanager.resend_interval must be positive")
	}
	switch c.Kafka.SASL.Mechanism {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		return fmt.Errorf("config: kafka.sasl.mechanism %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", c.Kafka.SASL.Mechanism)
	}
	return nil
}
