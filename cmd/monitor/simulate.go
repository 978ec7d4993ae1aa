package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/sim"
)

func simulateCmd() *cobra.Command {
	var (
		brokers  []string
		scenario string
		seed     uint64
		payments int
		truth    string
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Produce a scenario's events to a Kafka cluster and write its ground truth as JSON",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, err := sim.Generate(scenario, seed, sim.Options{Payments: payments})
			if err != nil {
				return err
			}
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond), kgo.AllowAutoTopicCreation())
			if err != nil {
				return err
			}
			defer cl.Close()
			if err := sim.Produce(cmd.Context(), cl, ds.Events); err != nil {
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
	f.StringSliceVar(&brokers, "brokers", []string{"localhost:9092"}, "seed brokers")
	f.StringVar(&scenario, "scenario", "friday-rollback", "scenario: friday-rollback or clean")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	f.IntVar(&payments, "payments", 5000, "simulated payments")
	f.StringVar(&truth, "truth", "", "write the ground truth to this JSON file")
	return cmd
}
