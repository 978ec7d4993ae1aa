// Package demo runs a simulated incident through the monitor on an
// in-process Kafka cluster and scores what it found against the truth.
package demo

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	examplerules "github.com/invmon/invmon/rules"
)

// Options configure a demo run.
type Options struct {
	// Scenario is a sim scenario. Default "friday-rollback".
	Scenario string
	// Seed makes the run reproducible. Default 1.
	Seed uint64
	// Payments is the number of simulated payments. Default 5000.
	Payments int
	// Partitions per topic. Default 4.
	Partitions int32
	// AlertmanagerURLs, when set, receive the demo's alerts.
	AlertmanagerURLs []string
	// Timeout bounds the whole run. Default 2m.
	Timeout time.Duration
	// Logger. Default no-op.
	Logger *zap.Logger
	// Progress, when set, receives one line per phase.
	Progress func(string)
}

// Result is what the demo found.
type Result struct {
	Scenario string                `json:"scenario"`
	Seed     uint64                `json:"seed"`
	Events   int                   `json:"events"`
	Rules    map[string]*sim.Score `json:"rules"`
	Traps    map[string]int        `json:"traps"`
	Elapsed  time.Duration         `json:"-"`
}

// Run executes the demo.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Scenario == "" {
		o.Scenario = "friday-rollback"
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	names, sources, err := examplerules.Files()
	if err != nil {
		return nil, err
	}
	rs, err := rules.Parse(names, sources)
	if err != nil {
		return nil, fmt.Errorf("example rules: %w", err)
	}
	ds, err := sim.Generate(o.Scenario, o.Seed, sim.Options{Payments: o.Payments})
	if err != nil {
		return nil, err
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(o.Partitions, sim.Topics...))
	if err != nil {
		return nil, fmt.Errorf("in-process kafka: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	progress(fmt.Sprintf("started an in-process Kafka cluster (%d partitions per topic)", o.Partitions))

	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return nil, err
	}
	err = sim.Produce(ctx, producer, ds.Events)
	producer.Close()
	if err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("produced scenario %q (seed %d): %d events", o.Scenario, o.Seed, len(ds.Events)))

	cfg := config.Defaults()
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Group = "invmon-demo"
	cfg.HTTP.Listen = ""
	cfg.Alertmanager.URLs = o.AlertmanagerURLs
	dir, err := os.MkdirTemp("", "invmon-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg.StateDir = dir
	m, err := monitor.New(ctx, monitor.Options{Config: cfg, Rules: rs, Logger: o.Logger, TickInterval: 250 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	progress("monitor running; waiting until every input is read and every deadline has passed")
	if err := waitSettled(ctx, m, int64(len(ds.Events)), time.Now()); err != nil {
		stop()
		<-done
		return nil, err
	}
	if len(o.AlertmanagerURLs) > 0 {
		if err := m.FlushAlerts(ctx); err != nil {
			o.Logger.Warn("send alerts", zap.Error(err))
		}
	}
	stop()
	if err := <-done; err != nil {
		return nil, err
	}
	found, err := m.Violations(joinstate.Filter{})
	if err != nil {
		return nil, err
	}
	ruleNames := make([]string, len(rs.Rules))
	for i, r := range rs.Rules {
		ruleNames[i] = r.Name
	}
	res := &Result{
		Scenario: o.Scenario, Seed: o.Seed, Events: len(ds.Events),
		Rules: sim.Compare(ds.Truth, found, ruleNames), Traps: map[string]int{}, Elapsed: time.Since(start),
	}
	for _, t := range ds.Truth.Traps {
		res.Traps[t.Kind]++
	}
	return res, nil
}

// waitSettled waits until every produced record has been handled and every
// rule's watermark has caught up with the clock (the simulated traffic is in
// the past, so once the inputs are idle the watermarks follow the clock):
// then every deadline in the data has been judged.
func waitSettled(ctx context.Context, m *monitor.Monitor, records int64, started time.Time) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		s := m.Stats()
		if s.Records >= records && s.CaughtUp && s.Partitions > 0 && s.MinWatermark.After(started.Add(-time.Minute)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo did not settle: %d of %d records handled, watermark %s: %w", s.Records, records, s.MinWatermark, ctx.Err())
		case <-t.C:
		}
	}
}
