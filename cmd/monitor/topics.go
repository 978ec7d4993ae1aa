package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/topics"
)

// topicsFlags are what both topics subcommands need: the rules and a way to
// the cluster.
type topicsFlags struct {
	cfgPath   string
	brokers   []string
	ruleFiles []string
}

func (f *topicsFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.cfgPath, "config", "", "monitor configuration file: its kafka section (brokers, TLS, SASL) and rule_files")
	fl.StringSliceVar(&f.brokers, "brokers", []string{"localhost:9092"}, "seed brokers (default kafka.brokers of --config, else localhost:9092)")
	fl.StringArrayVar(&f.ruleFiles, "rule-files", nil, "rule file glob, repeatable (default rule_files of --config)")
}

// connect loads the rules and returns an admin client for the cluster.
func (f *topicsFlags) connect(cmd *cobra.Command) (*rules.RuleSet, *kadm.Client, func(), error) {
	var kafka config.Kafka
	ruleFiles := f.ruleFiles
	if f.cfgPath != "" {
		cfg, err := config.Load(f.cfgPath)
		if err != nil {
			return nil, nil, nil, err
		}
		kafka = cfg.Kafka
		if len(ruleFiles) == 0 {
			ruleFiles = cfg.RuleFiles
		}
	}
	if f.cfgPath == "" || cmd.Flags().Changed("brokers") {
		kafka.Brokers = f.brokers
	}
	if len(ruleFiles) == 0 {
		return nil, nil, nil, fmt.Errorf("no rules: give --rule-files or --config")
	}
	rs, err := rules.LoadFiles(ruleFiles...)
	if err != nil {
		return nil, nil, nil, err
	}
	security, err := kafkaconn.Options(kafka)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := kafkaconn.Check(cmd.Context(), kafka.Brokers, security); err != nil {
		return nil, nil, nil, err
	}
	// Metadata is read right after topics are created: a short cache age
	// lets it show them.
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(kafka.Brokers...), kgo.MetadataMinAge(250 * time.Millisecond)}, security...)...)
	if err != nil {
		return nil, nil, nil, err
	}
	return rs, kadm.NewClient(cl), cl.Close, nil
}

func topicsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "Create or check the Kafka topics the rules read",
	}
	cmd.AddCommand(topicsCreateCmd(), topicsCheckCmd())
	return cmd
}

func topicsCreateCmd() *cobra.Command {
	var (
		f           topicsFlags
		partitions  int32
		replication int16
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create every topic the rules read, with equal partition counts (lookup tables compacted)",
		Long: `Create every topic the rules read that does not exist yet, each with --partitions
partitions, so that the topics one rule joins are co-partitioned; topics read
only as lookup tables (reference data such as accounts) are compacted. Existing
topics are left alone and listed; the co-partitioning verdict follows, as
'monitor topics check' prints it. Exit 0 when the topics are co-partitioned.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs, adm, done, err := f.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			created, err := topics.Create(cmd.Context(), adm, rs, partitions, replication)
			for _, c := range created {
				if c.Existed {
					fmt.Printf("exists   %-16s %d partitions (left as it is)\n", c.Name, c.Partitions)
				} else {
					policy := ""
					if c.Compacted {
						policy = ", compacted"
					}
					fmt.Printf("created  %-16s %d partitions%s\n", c.Name, c.Partitions, policy)
				}
			}
			if err != nil {
				return err
			}
			return printVerdict(cmd.Context(), adm, rs)
		},
	}
	f.register(cmd)
	cmd.Flags().Int32Var(&partitions, "partitions", 0, "partitions of each topic created (required)")
	cmd.Flags().Int16Var(&replication, "replication-factor", -1, "replication factor (-1: the broker's default.replication.factor)")
	_ = cmd.MarkFlagRequired("partitions")
	return cmd
}

func topicsCheckCmd() *cobra.Command {
	var f topicsFlags
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Print the co-partitioning verdict the monitor would reach at startup (exit 1: it would refuse to start)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs, adm, done, err := f.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			return printVerdict(cmd.Context(), adm, rs)
		},
	}
	f.register(cmd)
	return cmd
}

func printVerdict(ctx context.Context, adm *kadm.Client, rs *rules.RuleSet) error {
	v, err := topics.Check(ctx, adm, rs)
	if err != nil {
		return err
	}
	fmt.Print("\n" + v.String())
	if v.Err != nil {
		return exitError{code: 1}
	}
	return nil
}
