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
			// Flags given on the command line win over the file.
			cfg, err := config.FromFileAndFlags(path, cmd.Flags(), cfg)
			if err != nil {
				return err
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
	// Every setting of the configuration file is a flag too, declared
	// once in config.Flags.
	config.BindFlags(f, &cfg)
	return cmd
}

// memoryHeadroom is what the Go heap holds beside state.cache_size: the
// batch in flight, decoding, the Kafka client's buffers, the HTTP server.
// The process's RSS is more than the Go memory limit by its file-backed
// pages (the binary, the memtables' logs, table pages between two
// releases, 120-180 MiB in the state benchmark). A headroom of 128 MiB
// kept the RSS nearer 2 × cache_size but put the five-rule run's heap at
// the limit, where the collector ran continuously: 40 % more CPU per event
// in alternating runs. So the limit leaves room, and the RSS may pass
// 2 × cache_size by the file-backed pages' excess.
const memoryHeadroom = 192 << 20

// processMemory is the resident memory the monitor is sized for at a
// state.cache_size: twice it (512 MiB by default), the Go memory limit and
// the file-backed pages beside it.
func processMemory(cacheSize config.ByteSize) int64 { return 2 * int64(cacheSize) }

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
