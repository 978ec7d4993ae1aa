package main

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/invmon/invmon/internal/demo"
)

func demoCmd() *cobra.Command {
	var (
		o      demo.Options
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a simulated incident through the monitor on an in-process Kafka and score it",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !asJSON {
				o.Progress = func(s string) { fmt.Fprintln(os.Stderr, "demo:", s) }
			}
			res, err := demo.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(res)
			}
			printDemo(res)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, `print {"rules": {"<rule>": {"injected": n, "found": n, "missed": n, "false_positives": n}}}`)
	f.StringVar(&o.Scenario, "scenario", "friday-rollback", "scenario: friday-rollback, clean or lagging-ledger")
	f.Uint64Var(&o.Seed, "seed", 1, "random seed; the same seed gives the same incident")
	f.IntVar(&o.Payments, "payments", 5000, "simulated payments")
	f.StringSliceVar(&o.AlertmanagerURLs, "alertmanager", nil, "also send the demo's alerts to this Alertmanager URL")
	return cmd
}

func printDemo(res *demo.Result) {
	fmt.Printf("\nScenario %q, seed %d: %d events. Finished in %.1fs.\n\n", res.Scenario, res.Seed, res.Events, res.Elapsed.Seconds())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "rule\tinjected\tfound\tmissed\tfalse_positives\tresolved late (found/injected)\topen impact\t")
	names := slices.Sorted(maps.Keys(res.Rules))
	for _, n := range names {
		s := res.Rules[n]
		open := res.Open[n].Text
		if res.Open[n].Impact == nil {
			open = "-" // a rule without impact.value: its count is in the table already
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d/%d\t%s\t\n", n, s.Injected, s.Found, s.Missed, s.FalsePositives, s.ResolvedFound, s.ResolvedExpected, open)
	}
	_ = w.Flush()
	fmt.Println("\nSLI counters (invmon_checks_total, invmon_violations_total) against the simulator's counts:")
	w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "rule\tchecks\texpected\tviolations\texpected\terror ratio\t")
	for _, n := range names {
		c := res.Checks[n]
		ratio := 0.0
		if c.Counted > 0 {
			ratio = float64(c.Violations) / float64(c.Counted)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%.3f %%\t\n", n, c.Counted, c.Expected, c.Violations, c.ViolationsTruth, ratio*100)
	}
	_ = w.Flush()
	traps := make([]string, 0, len(res.Traps))
	for k := range res.Traps {
		traps = append(traps, k)
	}
	sort.Strings(traps)
	fmt.Println("\nTraps that must not fire (disorder a correct monitor tolerates):")
	for _, k := range traps {
		fmt.Printf("  %-28s %d\n", k, res.Traps[k])
	}
	if len(res.Blind) > 0 {
		fmt.Printf("\nStreams reported blind (InvariantMonitorBlind) while they lagged: %v; still blind at the end: %v\n", res.Blind, res.BlindAfter)
	}
	ok := true
	for _, s := range res.Rules {
		ok = ok && s.Missed == 0 && s.FalsePositives == 0 && s.Duplicates == 0
	}
	if ok {
		fmt.Println("\nEvery injected violation was found; nothing else was reported.")
	} else {
		fmt.Println("\nThe monitor disagreed with the ground truth (see missed / false_positives).")
	}
}
