package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/demo"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/schema"
	"github.com/invmon/invmon/internal/sim"
	examplerules "github.com/invmon/invmon/rules"
)

func simulateCmd() *cobra.Command {
	var (
		brokers  []string
		cfgPath  string
		scenario string
		seed     uint64
		payments int
		truth    string
		start    string
		live     bool
		format   string
		registry string
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Produce a scenario's events to a Kafka cluster and write its ground truth as JSON",
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := sim.Options{Payments: payments}
			switch {
			case start != "":
				t, err := time.Parse(time.RFC3339, start)
				if err != nil {
					return fmt.Errorf("--start: %w", err)
				}
				opts.Start = t
			case live:
				opts.Start = time.Now().Add(2 * time.Second)
			default:
				// The incident just happened: it ends about now, so the events
				// are neither in the future nor old enough for retention.
				probe, err := sim.Generate(scenario, seed, sim.Options{Payments: payments, Start: time.Unix(0, 0)})
				if err != nil {
					return err
				}
				span := probe.Events[len(probe.Events)-1].Time.Sub(time.Unix(0, 0))
				opts.Start = time.Now().Add(-span).Truncate(time.Second)
			}
			ds, err := sim.Generate(scenario, seed, opts)
			if err != nil {
				return err
			}
			if format != rules.FormatJSON {
				// The example schemas are registered under TOPIC-value and
				// every event is produced in the Confluent wire format.
				if registry == "" {
					return fmt.Errorf("--format %s needs --schema-registry", format)
				}
				src, err := sr.NewClient(sr.URLs(registry))
				if err != nil {
					return err
				}
				enc, err := schema.RegisterSchemas(cmd.Context(), src, format, examplerules.Schemas(), "", sim.Topics...)
				if err != nil {
					return err
				}
				if err := demo.EncodeEvents(enc, ds.Events); err != nil {
					return err
				}
			}
			// The configuration file, when given, supplies the cluster and its
			// TLS and SASL settings exactly as `monitor run` uses them.
			var kafka config.Kafka
			if cfgPath != "" {
				cfg, err := config.Load(cfgPath)
				if err != nil {
					return err
				}
				kafka = cfg.Kafka
			}
			if cfgPath == "" || cmd.Flags().Changed("brokers") {
				kafka.Brokers = brokers
			}
			security, err := kafkaconn.Options(kafka)
			if err != nil {
				return err
			}
			if err := kafkaconn.Check(cmd.Context(), kafka.Brokers, security); err != nil {
				return err
			}
			cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(kafka.Brokers...), kgo.ProducerLinger(5 * time.Millisecond), kgo.AllowAutoTopicCreation()}, security...)...)
			if err != nil {
				return err
			}
			defer cl.Close()
			produce := sim.Produce
			if live {
				produce = sim.ProduceLive
				fmt.Fprintf(os.Stderr, "producing %d events as they happen, until %s\n", len(ds.Events), ds.Events[len(ds.Events)-1].Time.Format(time.RFC3339))
			}
			if err := produce(cmd.Context(), cl, ds.Events); err != nil {
				return err
			}
			if truth != "" {
				b, err := json.MarshalIndent(ds.Truth, "", "  ")
				if err != nil {
					return err
				}
				if err := os.WriteFile(truth, b, 0o644); err != nil {
					return err
				}
			}
			fmt.Fprintf(os.Stderr, "produced %d events of scenario %q (seed %d); %d violations injected\n",
				len(ds.Events), scenario, seed, len(ds.Truth.Violations))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", []string{"localhost:9092"}, "seed brokers (default kafka.brokers of --config, else localhost:9092)")
	f.StringVar(&cfgPath, "config", "", "monitor configuration file: its kafka section (brokers, TLS, SASL) reaches the cluster")
	f.StringVar(&scenario, "scenario", "friday-rollback", "scenario: friday-rollback, clean or lagging-ledger")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	f.IntVar(&payments, "payments", 5000, "simulated payments")
	f.StringVar(&truth, "truth", "", "write the ground truth to this JSON file")
	f.StringVar(&start, "start", "", "event time of the first event, RFC 3339 (default: so that the incident ends now)")
	f.BoolVar(&live, "live", false, "start now and produce each event when its time comes")
	f.StringVar(&format, "format", rules.FormatJSON, "value format: json, avro or protobuf (the last two register rules/schemas/ in --schema-registry)")
	f.StringVar(&registry, "schema-registry", "", "Schema Registry URL (Apicurio: .../apis/ccompat/v7), for --format avro or protobuf")
	return cmd
}
