package main

import (
	"fmt"
	"os"

	promconfig "github.com/prometheus/common/config"
	"github.com/spf13/cobra"

	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
)

func rulesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rules", Short: "Check and test rule files"}
	cmd.AddCommand(rulesTestCmd())
	var registry []string
	check := &cobra.Command{
		Use:   "check FILE...",
		Short: "Validate rule files; exit 1 with every error (file:line:col) when any is invalid",
		Long: "Validate rule files; exit 1 with every error (file:line:col) when any is invalid.\n\n" +
			"With --schema-registry, the expressions of streams in avro, protobuf or json_schema format are\n" +
			"also type-checked against the latest schema of each stream's subject: a misspelt or removed\n" +
			"field and a comparison of mismatched types are errors. Exit 2 when the registry cannot answer.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rs, err := rules.LoadFiles(args...)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return exitError{code: 1}
			}
			for _, w := range rs.Warnings {
				fmt.Fprintln(os.Stderr, "warning: "+w.Error())
			}
			checked := ""
			if len(registry) > 0 && len(rs.SchemaStreams()) > 0 {
				reg, err := monitor.NewRegistry(promconfig.DefaultHTTPClientConfig, registry, nil, "")
				if err != nil {
					return err
				}
				errs, err := reg.TypeCheck(cmd.Context(), rs)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					return exitError{code: 2}
				}
				if len(errs) > 0 {
					fmt.Fprintln(os.Stderr, errs)
					return exitError{code: 1}
				}
				checked = fmt.Sprintf("; %d streams type-checked against the registry", len(rs.SchemaStreams()))
			}
			fmt.Printf("SUCCESS: %d rules in %d files (version %s)%s\n", len(rs.Rules), len(rs.Files), rs.Version, checked)
			return nil
		},
	}
	check.Flags().StringSliceVar(&registry, "schema-registry", nil, "Schema Registry URL (Apicurio: .../apis/ccompat/v7) to type-check rules against")
	cmd.AddCommand(check)
	return cmd
}
