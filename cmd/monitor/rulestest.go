package main

import (
	"github.com/spf13/cobra"

	"github.com/invmon/invmon/internal/ruletest"
)

// rulesTestCmd runs rule unit tests. Failures are reported on stdout with the
// tests that passed, as one report, and turn into exit status 1.
func rulesTestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "test FILE...",
		Short: "Run rule unit tests (rules/*_test.yml): input records on a test clock, expected violations at evaluation times",
		Long: `Run rule unit tests. A test file names rule files (relative to itself) and
lists tests; each test delivers input records at clock times (at: 10s) and
states the exact violations (rule, key, state) and dead letters expected at
evaluation times. In record values, ${t+30s} is the RFC 3339 time 30s after
the test's start. Exits 0 when every test passes, 1 otherwise.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !ruletest.RunFiles(cmd.OutOrStdout(), args...) {
				return exitError{code: 1}
			}
			return nil
		},
	}
}
