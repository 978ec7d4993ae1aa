package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/invmon/invmon/internal/report"
)

func reportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Work with replay evidence reports",
	}
	cmd.AddCommand(reportDiffCmd())
	return cmd
}

func reportDiffCmd() *cobra.Command {
	var asJSON, exitCode bool
	cmd := &cobra.Command{
		Use:   "diff BEFORE AFTER",
		Short: "Compare two replay reports (report.json files or report directories): fixed, still open, new",
		Long: `Compares two replay reports, typically of one window before and after a
repair. Findings are matched by rule, entity key and triggering event:
  fixed       open before, resolved (or no longer found) after
  still open  open in both
  new         open after, not open before
Warnings name differing windows, changed rules and partitions the later run
did not cover. With --exit-code the status is 1 when anything is still open
or new, like git diff.`,
		Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			a, err := report.Load(args[0])
			if err != nil {
				return err
			}
			b, err := report.Load(args[1])
			if err != nil {
				return err
			}
			d := report.Compare(a, b)
			if asJSON {
				err = printJSON(d)
			} else {
				err = d.Text(os.Stdout)
			}
			if err != nil {
				return err
			}
			if exitCode && len(d.StillOpen)+len(d.New) > 0 {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the diff as JSON")
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit 1 when findings are still open or new")
	return cmd
}
