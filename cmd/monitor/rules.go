package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/invmon/invmon/internal/rules"
)

func rulesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rules", Short: "Check and test rule files"}
	cmd.AddCommand(rulesTestCmd())
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE...",
		Short: "Validate rule files; exit 1 with every error (file:line:col) when any is invalid",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			rs, err := rules.LoadFiles(args...)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return exitError{code: 1}
			}
			fmt.Printf("SUCCESS: %d rules in %d files (version %s)\n", len(rs.Rules), len(rs.Files), rs.Version)
			return nil
		},
	})
	return cmd
}
