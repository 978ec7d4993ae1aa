package main

import (
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/monitor"
)

func runCmd() *cobra.Command {
	var (
		path     string
		logLevel string
		cfg      = config.Defaults()
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Consume the business topics as a consumer group and page on broken invariants",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path != "" {
				fileCfg, err := config.Load(path)
				if err != nil {
					return err
				}
				// Flags given on the command line win over the file.
				applyFlags(cmd, &fileCfg, &cfg)
				cfg = fileCfg
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			setMemoryLimit(cfg.State.CacheSize, log)
			m, err := monitor.New(cmd.Context(), monitor.Options{Config: cfg, Logger: log})
			if err != nil {
				return err
			}
			defer m.Close()
			log.Info("monitor started", zap.Strings("brokers", cfg.Kafka.Brokers), zap.String("group", cfg.Kafka.Group),
				zap.String("http", m.HTTPAddr()), zap.Int("rules", len(m.Rules().Rules)), zap.String("rules_version", m.Rules().Version))
			// SIGHUP reloads the rules, like Prometheus: parse everything
			// first, swap only on success.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-cmd.Context().Done():
						return
					case <-hup:
						_ = m.Reload(cmd.Context())
					}
				}
			}()
			err = m.Run(cmd.Context())
			log.Info("monitor stopped", zap.Error(err))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "config", "", "configuration file (YAML); flags override it")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringSliceVar(&cfg.Kafka.Brokers, "kafka.brokers", nil, "seed brokers, host:port, comma-separated")
	f.StringVar(&cfg.Kafka.Group, "kafka.group", cfg.Kafka.Group, "consumer group")
	f.StringVar(&cfg.Kafka.ClientID, "kafka.client-id", cfg.Kafka.ClientID, "Kafka client id")
	f.StringVar(&cfg.Kafka.DLQTopic, "kafka.dlq-topic", "", "dead-letter topic (default <group>.dlq)")
	f.StringVar(&cfg.Kafka.ViolationsTopic, "kafka.violations-topic", "", "publish every violation and resolution to this topic, exactly once")
	f.BoolVar(&cfg.Kafka.Changelog, "kafka.changelog", cfg.Kafka.Changelog, "log state to <group>.changelog so partitions can move between members")
	f.StringVar(&cfg.Kafka.InstanceID, "kafka.instance-id", "", "static group membership id: a restart keeps the partitions without a rebalance")
	// Kafka security. Secrets only as files: a flag's value shows in ps.
	f.BoolVar(&cfg.Kafka.TLS.Enabled, "kafka.tls", false, "TLS to the brokers")
	f.StringVar(&cfg.Kafka.TLS.Config.CAFile, "kafka.tls.ca-file", "", "PEM CA bundle the broker certificates must chain to (default the system roots)")
	f.StringVar(&cfg.Kafka.TLS.Config.CertFile, "kafka.tls.cert-file", "", "PEM client certificate, for brokers that require one")
	f.StringVar(&cfg.Kafka.TLS.Config.KeyFile, "kafka.tls.key-file", "", "PEM key of the client certificate")
	f.StringVar(&cfg.Kafka.TLS.Config.ServerName, "kafka.tls.server-name", "", "name the broker certificates must carry (default each broker's host)")
	f.StringVar(&cfg.Kafka.SASL.Mechanism, "kafka.sasl.mechanism", "", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM")
	f.StringVar(&cfg.Kafka.SASL.Username, "kafka.sasl.username", "", "SASL user of PLAIN and SCRAM")
	f.StringVar(&cfg.Kafka.SASL.PasswordFile, "kafka.sasl.password-file", "", "file holding the SASL password, read at every connection")
	f.DurationVar(&cfg.Kafka.ProduceTimeout, "kafka.produce-timeout", cfg.Kafka.ProduceTimeout, "how long a batch waits for its dead letters and changelog to be acknowledged before the member stops")
	f.DurationVar(&cfg.EventTime.MaxFuture, "event-time.max-future", 0, "dead-letter events stamped further than this ahead of the clock (0: off)")
	f.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "Badger state directory")
	f.Var(&cfg.State.CacheSize, "state.cache-size", "memory of the state: Badger memtables and caches (default 256MiB, minimum 24MiB); the Go memory limit follows it")
	f.DurationVar(&cfg.State.ViolationRetention, "state.violation-retention", cfg.State.ViolationRetention, "how long resolved violations are kept (their ids as long again)")
	f.StringSliceVar(&cfg.RuleFiles, "rule-files", nil, "rule file globs, comma-separated")
	f.StringVar(&cfg.HTTP.Listen, "http.listen", cfg.HTTP.Listen, "HTTP listen address for /metrics, health and API")
	f.StringVar(&cfg.HTTP.ExternalURL, "http.external-url", cfg.HTTP.ExternalURL, "URL users reach the monitor at (alert links)")
	f.StringVar(&cfg.HTTP.WebConfigFile, "web.config.file", "", "exporter-toolkit web configuration: TLS, client certificates, basic auth (as Prometheus takes it)")
	f.BoolVar(&cfg.HTTP.OpenHealthChecks, "http.open-health-checks", false, "serve /healthz and /readyz without basic auth")
	f.StringSliceVar(&cfg.Alertmanager.URLs, "alertmanager.url", nil, "Alertmanager base URL; repeat for HA")
	f.DurationVar(&cfg.Alertmanager.ResendInterval, "alertmanager.resend-interval", cfg.Alertmanager.ResendInterval, "re-send period of firing alerts")
	f.StringSliceVar(&cfg.SchemaRegistry.URLs, "schema-registry.url", nil, "Schema Registry base URL (Apicurio: .../apis/ccompat/v7); repeat for fallbacks")
	f.StringVar(&cfg.SLO.PrometheusURL, "slo.prometheus-url", "", "Prometheus evaluating the generated SLO rules; /api/v1/rules shows each rule's remaining budget and burn rate from it")
	return cmd
}

// applyFlags copies every flag the user set onto the file's configuration.
func applyFlags(cmd *cobra.Command, dst, flags *config.Config) {
	set := func(name string, apply func()) {
		if cmd.Flags().Changed(name) {
			apply()
		}
	}
	set("kafka.brokers", func() { dst.Kafka.Brokers = flags.Kafka.Brokers })
	set("kafka.group", func() { dst.Kafka.Group = flags.Kafka.Group })
	set("kafka.client-id", func() { dst.Kafka.ClientID = flags.Kafka.ClientID })
	set("kafka.dlq-topic", func() { dst.Kafka.DLQTopic = flags.Kafka.DLQTopic })
	set("kafka.violations-topic", func() { dst.Kafka.ViolationsTopic = flags.Kafka.ViolationsTopic })
	set("kafka.changelog", func() { dst.Kafka.Changelog = flags.Kafka.Changelog })
	set("kafka.instance-id", func() { dst.Kafka.InstanceID = flags.Kafka.InstanceID })
	set("kafka.tls", func() { dst.Kafka.TLS.Enabled = flags.Kafka.TLS.Enabled })
	set("kafka.tls.ca-file", func() { dst.Kafka.TLS.Config.CAFile = flags.Kafka.TLS.Config.CAFile })
	set("kafka.tls.cert-file", func() { dst.Kafka.TLS.Config.CertFile = flags.Kafka.TLS.Config.CertFile })
	set("kafka.tls.key-file", func() { dst.Kafka.TLS.Config.KeyFile = flags.Kafka.TLS.Config.KeyFile })
	set("kafka.tls.server-name", func() { dst.Kafka.TLS.Config.ServerName = flags.Kafka.TLS.Config.ServerName })
	set("kafka.sasl.mechanism", func() { dst.Kafka.SASL.Mechanism = flags.Kafka.SASL.Mechanism })
	set("kafka.sasl.username", func() { dst.Kafka.SASL.Username = flags.Kafka.SASL.Username })
	set("kafka.sasl.password-file", func() { dst.Kafka.SASL.PasswordFile = flags.Kafka.SASL.PasswordFile })
	set("kafka.produce-timeout", func() { dst.Kafka.ProduceTimeout = flags.Kafka.ProduceTimeout })
	set("event-time.max-future", func() { dst.EventTime.MaxFuture = flags.EventTime.MaxFuture })
	set("state-dir", func() { dst.StateDir = flags.StateDir })
	set("state.cache-size", func() { dst.State.CacheSize = flags.State.CacheSize })
	set("state.violation-retention", func() { dst.State.ViolationRetention = flags.State.ViolationRetention })
	set("rule-files", func() { dst.RuleFiles = flags.RuleFiles })
	set("http.listen", func() { dst.HTTP.Listen = flags.HTTP.Listen })
	set("http.external-url", func() { dst.HTTP.ExternalURL = flags.HTTP.ExternalURL })
	set("web.config.file", func() { dst.HTTP.WebConfigFile = flags.HTTP.WebConfigFile })
	set("http.open-health-checks", func() { dst.HTTP.OpenHealthChecks = flags.HTTP.OpenHealthChecks })
	set("alertmanager.url", func() { dst.Alertmanager.URLs = flags.Alertmanager.URLs })
	set("alertmanager.resend-interval", func() { dst.Alertmanager.ResendInterval = flags.Alertmanager.ResendInterval })
	set("schema-registry.url", func() { dst.SchemaRegistry.URLs = flags.SchemaRegistry.URLs })
	set("slo.prometheus-url", func() { dst.SLO.PrometheusURL = flags.SLO.PrometheusURL })
}

// memoryHeadroom is what the monitor needs beside the state's caches: the
// batch in flight, decoding, the Kafka client's buffers, the HTTP server.
const memoryHeadroom = 192 << 20

// setMemoryLimit makes the Go runtime collect harder as the process nears
// state.cache_size plus the headroom, unless GOMEMLIMIT says otherwise: the
// state's caches are the bulk of the heap, so memory is what was configured.
func setMemoryLimit(cacheSize config.ByteSize, log *zap.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := int64(cacheSize) + memoryHeadroom
	debug.SetMemoryLimit(limit)
	log.Info("memory limit set from state.cache_size", zap.String("limit", config.ByteSize(limit).String()))
}
