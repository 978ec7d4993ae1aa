package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/replay"
	"github.com/invmon/invmon/internal/report"
)

// Exit codes of `monitor replay`, so scripts can gate an incident's closure
// on it: 0 every rule passes, 1 the replay failed, 2 it finished and a
// verdict is fail, 3 it was interrupted and can be resumed.
const (
	exitVerdictFail = 2
	exitInterrupted = 3
)

func replayCmd() *cobra.Command {
	var (
		path            string
		logLevel        string
		from, to, until string
		leadIn          time.Duration
		progress        string
		cfg             = config.Defaults()
		o               replay.Options
	)
	cmd := &cobra.Command{
		Use:   "replay --config FILE --from TIME --to TIME [--report DIR]",
		Short: "Re-check a past window of the topics through the rules, safely, and write an evidence report",
		Long: `Replay reads a past window of the rules' topics with its own Kafka client
(partitions assigned directly: no consumer group, no offset commits), evaluates
it with its own state in DIR/replay-state (never the live state directory),
and writes DIR/report.json, report.md and report.html.

Findings are violations whose triggering event time is in [--from, --to).
Inputs are read from --from minus the lead-in (default: the rules' largest
lookback, unique window or 'for') to --until (default: the partitions' end
offsets now, so late events and repairs are seen). The clock is event time;
once everything is read it moves past --to by the rules' largest deadline,
so every deadline of a trigger in the window is judged. See docs/replay.md.

Times are RFC 3339 (2026-11-20T09:00:00Z), 'now' or 'now-DURATION'.
Exit status: 0 every rule passes, 1 error, 2 a verdict failed, 3 interrupted
(continue with --resume --report DIR).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.FromFileAndFlags(path, cmd.Flags(), cfg)
			if err != nil {
				return err
			}
			o.Config = cfg
			now := time.Now()
			if !o.Resume || cmd.Flags().Changed("from") || cmd.Flags().Changed("to") {
				if o.Resume {
					return errors.New("--resume takes the window from the replay's plan; drop --from and --to")
				}
				if from == "" || to == "" {
					return errors.New("--from and --to are required")
				}
				if o.From, err = replay.ParseTime(from, now); err != nil {
					return fmt.Errorf("--from: %w", err)
				}
				if o.To, err = replay.ParseTime(to, now); err != nil {
					return fmt.Errorf("--to: %w", err)
				}
				if until != "" {
					if o.Until, err = replay.ParseTime(until, now); err != nil {
						return fmt.Errorf("--until: %w", err)
					}
				}
			}
			o.LeadIn = leadIn
			if !cmd.Flags().Changed("lead-in") {
				o.LeadIn = -1
			}
			if o.ReportDir == "" {
				if o.Resume {
					return errors.New("--resume needs the --report directory of the replay to continue")
				}
				o.ReportDir = "invmon-replay-" + now.UTC().Format("20060102T150405Z")
			}
			// Bars need a terminal that knows its width; a pseudo-terminal
			// without a size gets plain lines.
			tty := false
			if fd := int(os.Stderr.Fd()); term.IsTerminal(fd) {
				w, _, err := term.GetSize(fd)
				tty = err == nil && w > 0
			}
			switch progress {
			case "auto":
				o.Progress, o.Terminal = os.Stderr, tty
			case "bars":
				o.Progress, o.Terminal = os.Stderr, true
			case "lines":
				o.Progress = os.Stderr
			case "none":
			default:
				return fmt.Errorf("--progress %q: want auto, bars, lines or none", progress)
			}
			o.LogSink = replay.NewLogSink(os.Stderr)
			log, err := replayLogger(logLevel, o.LogSink, o.Terminal)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			o.Logger = log
			rep, err := replay.Run(cmd.Context(), o)
			if errors.Is(err, replay.ErrInterrupted) {
				fmt.Fprintf(os.Stderr, "monitor: replay interrupted; its progress is saved. Continue it with:\n  monitor replay --config %s --resume --report %s\n", path, o.ReportDir)
				return exitError{exitInterrupted}
			}
			if rep != nil {
				printReplay(rep, o.ReportDir)
			}
			if err != nil {
				return err
			}
			if rep.Verdict != report.Pass {
				return exitError{exitVerdictFail}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "config", "", "configuration file (YAML), as for monitor run; its state_dir is not used")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	// These settings of the file may be given (and override it) as flags.
	config.BindFlags(f, &cfg, "kafka.brokers", "rule-files", "alertmanager.url")
	f.StringVar(&from, "from", "", "start of the window (inclusive): findings are violations triggered at or after it")
	f.StringVar(&to, "to", "", "end of the window (exclusive)")
	f.StringVar(&until, "until", "", "stop reading at this record timestamp (default: the partitions' end offsets now)")
	f.DurationVar(&leadIn, "lead-in", 0, "read inputs from this long before --from (default: the rules' largest lookback, unique window or 'for')")
	f.StringSliceVar(&o.Rules, "rules", nil, "replay only these rules, comma-separated (default all)")
	f.Float64Var(&o.Rate, "rate", 0, "at most this many records per second over all partitions (0: unlimited)")
	f.StringVar(&o.ReportDir, "report", "", "report directory; also holds the replay's state for --resume (default invmon-replay-<time>)")
	f.BoolVar(&o.Resume, "resume", false, "continue the replay in --report where its last checkpoint left it")
	f.BoolVar(&o.Alert, "alert", false, "page the rules with findings still open, annotated with the replay's run id")
	f.DurationVar(&o.CheckpointInterval, "checkpoint-interval", 2*time.Second, "how often progress is made durable")
	f.DurationVar(&o.StallTimeout, "stall-timeout", 30*time.Second, "a partition waiting this long for records short of its planned end is not covered")
	f.StringVar(&progress, "progress", "auto", "progress on stderr: auto (bars on a terminal, else lines), bars, lines or none")
	f.DurationVar(&o.ProgressInterval, "progress-interval", 5*time.Second, "period of plain progress lines")
	return cmd
}

// replayLogger logs to sink: human-readable on a terminal (beside progress
// bars), JSON otherwise like monitor run.
func replayLogger(level string, sink *replay.LogSink, terminal bool) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	if terminal {
		enc = zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(sink), lvl)), nil
}

// printReplay prints the verdict per rule and where the report is.
func printReplay(r *report.Report, dir string) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "replay %s of %s to %s: %s\n", r.Run.ID, r.Window.From.Format(time.RFC3339), r.Window.To.Format(time.RFC3339), strings.ToUpper(r.Verdict))
	fmt.Fprintln(w, "rule\tverdict\tobjective\tchecked\tviolating\topen\tresolved\topen impact\treasons")
	for _, rule := range r.Rules {
		openImpact := "-"
		if u := rule.Unit(); !u.Counted {
			openImpact = u.Text(rule.OpenImpact)
		}
		budget := "-"
		if rule.Objective > 0 {
			budget = fmt.Sprintf("%.2f%% of %.2f%%: %s", rule.ErrorRatio*100, (1-rule.Objective)*100, rule.Budget)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", rule.Name, rule.Verdict, budget, rule.EntitiesChecked, rule.EntitiesViolating,
			rule.Open, rule.Resolved, openImpact, strings.Join(rule.Reasons, "; "))
	}
	_ = w.Flush()
	covered, total := 0, 0
	for _, c := range r.Coverage {
		total++
		if c.Covered {
			covered++
		}
	}
	fmt.Printf("coverage: %d of %d partitions fully read; %d records read in this run at %.0f records/s\n",
		covered, total, r.Run.RecordsThisRun, r.Run.RecordsPerSecond)
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	fmt.Printf("report: %s (%s, %s)\n", filepath.Join(abs, report.HTMLFile), report.JSONFile, report.MDFile)
}
