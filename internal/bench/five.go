package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/invmon/invmon/internal/consumer"
	"github.com/invmon/invmon/internal/sim"
)

// FiveOptions size the five-rule benchmark.
type FiveOptions struct {
	Brokers []string
	// Prefix prefixes the topics and the monitor's consumer groups.
	Prefix string
	// Events is about how many records to produce over the five topics.
	Events     int
	Partitions int32
	Seed       uint64
	// PerRule also runs each rule alone before all five together.
	PerRule bool
	// Progress, when set, receives a line as each step starts.
	Progress io.Writer
}

// MonitorRunner runs the monitor with the named example rules (all five
// when names is empty) over the domain until it has handled want records,
// and returns what it measured and the peak RSS of the process it ran in.
// The command runs each in a child process, so that the peak RSS is that
// run's alone; a test runs them in its own process.
type MonitorRunner func(ctx context.Context, d *Domain, group string, names []string, want int, verdicts bool) (*Run, int64, error)

// Row is one monitor run of the five-rule benchmark.
type Row struct {
	// Rule names the rule run alone, or "all five rules".
	Rule   string
	Topics []string
	Events int
	// Rate is the monitor's events per second; BareRate a bare franz-go
	// consumer's records per second over the same topics in the same run.
	Rate, BareRate float64
	PeakRSS        int64
	LiveEntries    int64
	// Elapsed, CPU, Stages, Batches and BatchRecords are the monitor run's
	// (see Run): where its wall-clock time went.
	Elapsed               time.Duration
	CPU                   time.Duration
	MachineBusy           float64
	Stages                map[string]StageTime
	Batches, BatchRecords int64
}

// Ratio is the monitor's rate as a share of the bare consumer's.
func (r Row) Ratio() float64 { return r.Rate / r.BareRate }

// FiveReport is what the five-rule benchmark measured.
type FiveReport struct {
	Events  int
	Records map[string]int
	// Rows holds each rule alone (when asked), then all five together last.
	Rows []Row
	// Scores compare the five-rule run's violations with the truth.
	Scores map[string]*sim.Score
	// Budget is the resident memory the monitor is sized for (twice
	// state.cache_size: the Go memory limit and the file-backed pages
	// beside it); zero when none was set.
	Budget int64
}

// All is the row of the five rules together.
func (r *FiveReport) All() Row { return r.Rows[len(r.Rows)-1] }

// Five produces the example domain and measures the monitor over it: each
// rule alone (with PerRule), then all five together, each beside a bare
// consumer of the same topics, and the five-rule run's verdicts against the
// scenario's truth.
func Five(ctx context.Context, o FiveOptions, run MonitorRunner) (*FiveReport, error) {
	say := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "bench: "+format+"\n", args...)
		}
	}
	say("producing about %d events of the example domain to %s{%s} on %v ...", o.Events, o.Prefix, strings.Join(sim.Topics, ","), o.Brokers)
	d, err := PrepareDomain(ctx, o.Brokers, o.Prefix, o.Events, o.Partitions, o.Seed)
	if err != nil {
		return nil, err
	}
	rep := &FiveReport{Records: d.Records, Events: d.Events(sim.Topics...)}
	var sets [][]string
	if o.PerRule {
		for _, n := range ExampleRuleNames() {
			sets = append(sets, []string{n})
		}
	}
	sets = append(sets, nil)
	for i, names := range sets {
		_, topics, err := ExampleRules(d.Prefix, names...)
		if err != nil {
			return nil, err
		}
		want := d.Events(topics...)
		label := "all five rules"
		if len(names) == 1 {
			label = names[0]
		}
		say("bare franz-go consumer over %v ...", topics)
		bare, err := RawConsume(ctx, o.Brokers, want, d.Topics(topics...)...)
		if err != nil {
			return nil, err
		}
		say("monitor, %s, over %v ...", label, topics)
		verdicts := names == nil
		res, rss, err := run(ctx, d, fmt.Sprintf("%sbench-%d", d.Prefix, i), names, want, verdicts)
		if err != nil {
			return nil, fmt.Errorf("monitor, %s: %w", label, err)
		}
		rep.Rows = append(rep.Rows, Row{Rule: label, Topics: topics, Events: want,
			Rate: float64(res.Records) / res.Elapsed.Seconds(), BareRate: float64(want) / bare.Seconds(),
			PeakRSS: rss, LiveEntries: res.LiveEntries, Elapsed: res.Elapsed, CPU: res.CPU, MachineBusy: res.MachineBusy, Stages: res.Stages,
			Batches: res.Batches, BatchRecords: res.BatchRecords})
		if verdicts {
			rep.Scores = sim.Compare(d.Truth, res.Violations, ExampleRuleNames())
		}
	}
	return rep, nil
}

// Print writes the report as the benchmark shows it.
func (r *FiveReport) Print(w io.Writer) {
	all := r.All()
	fmt.Fprintf(w, "events:                      %d (payments %d, ledger %d, orders %d, entitlements %d, accounts %d)\n",
		r.Events, r.Records[sim.TopicPayments], r.Records[sim.TopicLedger], r.Records[sim.TopicOrders],
		r.Records[sim.TopicEntitlements], r.Records[sim.TopicAccounts])
	fmt.Fprintf(w, "bare franz-go consumer:      %.0f records/s\n", all.BareRate)
	fmt.Fprintf(w, "monitor, all five rules:     %.0f events/s\n", all.Rate)
	fmt.Fprintf(w, "monitor / bare consumer:     %.1f%%\n", 100*all.Ratio())
	fmt.Fprintf(w, "monitor peak RSS:            %.0f MiB\n", float64(all.PeakRSS)/(1<<20))
	if r.Budget > 0 {
		within := "within"
		if all.PeakRSS > r.Budget {
			within = "OVER"
		}
		fmt.Fprintf(w, "memory budget:               %.0f MiB (2 × state.cache_size; peak RSS %s it)\n", float64(r.Budget)/(1<<20), within)
	}
	fmt.Fprintf(w, "live state entries:          %d\n", all.LiveEntries)
	found, injected, exact, detail := Verdict(r.Scores)
	verdict := "exact"
	if !exact {
		verdict = "NOT EXACT: " + detail
	}
	fmt.Fprintf(w, "violations found:            %d of %d injected (%s)\n", found, injected, verdict)
	all.printStages(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "rule\ttopics\tevents\tevents/s\tbare records/s\tshare of bare\tpeak RSS MiB\tlive entries\t")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.0f\t%.1f%%\t%.0f\t%d\t\n", row.Rule, strings.Join(row.Topics, "+"), row.Events,
			row.Rate, row.BareRate, 100*row.Ratio(), float64(row.PeakRSS)/(1<<20), row.LiveEntries)
	}
	tw.Flush()
}

// printStages writes where the run's wall-clock time went: the cores busy,
// the batches, and each stage's total time as a share of the run. The poll
// loop's stages (poll to enqueue) add up to about the run; the committer's
// run beside them.
func (r Row) printStages(w io.Writer) {
	if r.Elapsed <= 0 {
		return
	}
	fmt.Fprintf(w, "cores busy:                  %.2f by the monitor (%.1f s of CPU in %.1f s)", r.CPU.Seconds()/r.Elapsed.Seconds(), r.CPU.Seconds(), r.Elapsed.Seconds())
	if r.MachineBusy > 0 {
		fmt.Fprintf(w, ", %.2f of %d on the machine", r.MachineBusy, runtime.NumCPU())
	}
	fmt.Fprintln(w)
	if r.Batches > 0 {
		fmt.Fprintf(w, "batches:                     %d, %.0f records each on average\n", r.Batches, float64(r.BatchRecords)/float64(r.Batches))
	}
	var parts []string
	for _, name := range consumer.BatchStages {
		st, ok := r.Stages[name]
		if !ok {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f s (%.0f%%, %d×)", name, st.Seconds, 100*st.Seconds/r.Elapsed.Seconds(), st.Count))
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "batch stages (wall clock):   %s\n", strings.Join(parts, ", "))
	}
}
