package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/consumer"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/violation"
	examplerules "github.com/invmon/invmon/rules"
)

// eventsPerPayment is about how many events the simulator's friday-rollback
// mix yields per payment across the five topics (payment states, ledger
// entries, orders, entitlements, redeliveries): it sizes a run.
const eventsPerPayment = 4.5

// Domain is the example domain produced to a cluster for a benchmark: the
// five topics under one prefix, how many records each holds, and the truth
// of the scenario they carry.
type Domain struct {
	// Prefix prefixes every topic, so that runs never mix.
	Prefix string
	// Records counts the records produced per unprefixed topic name.
	Records map[string]int
	// Truth is what a correct monitor reports for the five rules.
	Truth sim.Truth
}

// Events is the number of records in the topics.
func (d *Domain) Events(topics ...string) int {
	n := 0
	for _, t := range topics {
		n += d.Records[t]
	}
	return n
}

// Topics returns the prefixed names of the unprefixed topics.
func (d *Domain) Topics(topics ...string) []string {
	out := make([]string, len(topics))
	for i, t := range topics {
		out[i] = d.Prefix + t
	}
	return out
}

// PrepareDomain creates the example domain's five topics (the accounts
// table compacted) with partitions partitions each and produces the
// simulator's friday-rollback mix of about events events into them: payment
// states, ledger entries, orders, entitlements and account rows, with
// redeliveries, reordering, late entries and injected violations.
func PrepareDomain(ctx context.Context, brokers []string, prefix string, events int, partitions int32, seed uint64) (*Domain, error) {
	payments := int(float64(events)/eventsPerPayment) + 1
	// 50 payments a second: a 200k-payment run spans about an hour of
	// event time, so entitlements (one hour) expire and renew inside it.
	ds, err := sim.Generate("friday-rollback", seed, sim.Options{Payments: payments, Accounts: 1000, Rate: 50})
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(10*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(200_000))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	d := &Domain{Prefix: prefix, Records: map[string]int{}, Truth: ds.Truth}
	adm := kadm.NewClient(cl)
	var streams []string
	for _, t := range sim.Topics {
		if t != sim.TopicAccounts {
			streams = append(streams, prefix+t)
		}
	}
	if _, err := adm.CreateTopics(ctx, partitions, 1, nil, streams...); err != nil {
		return nil, fmt.Errorf("create topics: %w", err)
	}
	compact := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	if _, err := adm.CreateTopics(ctx, partitions, 1, compact, prefix+sim.TopicAccounts); err != nil {
		return nil, fmt.Errorf("create topic %s: %w", prefix+sim.TopicAccounts, err)
	}
	for i := range ds.Events {
		d.Records[ds.Events[i].Topic]++
		ds.Events[i].Topic = prefix + ds.Events[i].Topic
	}
	if err := sim.Produce(ctx, cl, ds.Events); err != nil {
		return nil, err
	}
	return d, nil
}

// ExampleRules parses the named example rules (all five when names is
// empty) with every stream's topic prefixed, and returns them with the
// unprefixed topics they read, sorted.
func ExampleRules(prefix string, names ...string) (*rules.RuleSet, []string, error) {
	files, sources, err := examplerules.Files()
	if err != nil {
		return nil, nil, err
	}
	all, err := rules.Parse(files, sources)
	if err != nil {
		return nil, nil, err
	}
	if len(names) > 0 {
		// Parse only the files holding the named rules, so that the monitor
		// reads only their streams.
		var keep []string
		for _, f := range files {
			one, err := rules.Parse([]string{f}, sources)
			if err != nil {
				return nil, nil, err
			}
			for _, r := range one.Rules {
				if slices.Contains(names, r.Name) && !slices.Contains(keep, f) {
					keep = append(keep, f)
				}
			}
		}
		if all, err = rules.Parse(keep, sources); err != nil {
			return nil, nil, err
		}
		for _, n := range names {
			if !slices.ContainsFunc(all.Rules, func(r *rules.Rule) bool { return r.Name == n }) {
				return nil, nil, fmt.Errorf("no example rule %q", n)
			}
		}
	}
	var topics []string
	for _, st := range all.Streams {
		topics = append(topics, st.Topic)
		st.Topic = prefix + st.Topic
		if st.Subject != "" {
			st.Subject = prefix + st.Subject
		}
	}
	sort.Strings(topics)
	return all, slices.Compact(topics), nil
}

// ExampleRuleNames lists the five example rules in a stable order: the
// absence rule the earlier benchmark measured first.
func ExampleRuleNames() []string {
	return []string{sim.RuleCapturedPaymentHasLedgerEntry, sim.RuleNoDuplicateLedgerEffect,
		sim.RulePaymentTransitionsAllowed, sim.RuleFulfilledOrderHasCapture, sim.RuleActiveSubscriptionEntitled}
}

// Run is what one monitor run measured.
type Run struct {
	// Records is how many records the monitor handled; Elapsed the time
	// from start until every one was evaluated and durable.
	Records int64
	Elapsed time.Duration
	// LiveEntries is the state the rules keep when the last record is
	// durable: pending expectations, buffered events, unique keys,
	// transition and state entries.
	LiveEntries int64
	// Violations is every violation recorded once the deadlines in the data
	// have passed; nil unless verdicts were asked for.
	Violations []violation.Violation
	// CPU is the process's CPU time (user and system) over Elapsed: CPU /
	// Elapsed is how many cores were busy.
	CPU time.Duration
	// MachineBusy is how many of the machine's cores were busy over Elapsed,
	// with every process (the broker, other work); 0 when /proc/stat cannot
	// be read. Beside CPU it tells a monitor that waits from one that is
	// short of CPU.
	MachineBusy float64
	// Stages is where the batches' wall-clock time went over Elapsed, per
	// stage of invmon_batch_stage_seconds; Batches and BatchRecords count
	// the polls that held records and their records.
	Stages                map[string]StageTime
	Batches, BatchRecords int64
	// PeakRSS is the process's own peak of resident memory (VmHWM) when the
	// run ended, in bytes; 0 where /proc/self/status cannot be read.
	PeakRSS int64
}

// StageTime is the time a batch stage took over a run, and how often it ran.
type StageTime struct {
	Count   uint64
	Seconds float64
}

// MonitorDomain runs the monitor over the domain's topics with rs until it
// has handled want records, durably, and times that. With verdicts it then
// waits until the inputs are idle and every deadline in the data has passed
// (the data lies in the past, so the watermarks follow the clock), and
// returns every violation.
func MonitorDomain(ctx context.Context, brokers []string, group string, rs *rules.RuleSet, want int, stateDir string, verdicts bool) (*Run, error) {
	cfg := config.Defaults()
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Group = group
	cfg.StateDir = stateDir
	cfg.HTTP.Listen = ""
	m, err := monitor.New(ctx, monitor.Options{Config: cfg, Rules: rs, Logger: zap.NewNop(), TickInterval: 250 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	start, cpu, machine := time.Now(), processCPU(), readMachineCPU()
	go func() { done <- m.Run(ctx) }()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	wait := func(ok func(s stats) bool, what string) error {
		for s := m.Stats(); !ok(s); s = m.Stats() {
			select {
			case err := <-done:
				return fmt.Errorf("monitor stopped early (%s, %d of %d records): %v", what, s.Records, want, err)
			case <-t.C:
			}
		}
		return nil
	}
	if err := wait(func(s stats) bool { return s.Records >= int64(want) && s.Durable }, "reading"); err != nil {
		return nil, err
	}
	run := &Run{Elapsed: time.Since(start), CPU: processCPU() - cpu, MachineBusy: readMachineCPU().coresBusySince(machine)}
	if err := run.gatherStages(m.Gatherer()); err != nil {
		return nil, err
	}
	s := m.Stats()
	run.Records, run.LiveEntries = s.Records, liveEntries(s)
	if verdicts {
		target := time.Now().Add(-time.Minute)
		if err := wait(func(s stats) bool {
			return s.CaughtUp && s.Durable && s.Partitions > 0 && s.MinWatermark.After(target)
		}, "settling"); err != nil {
			return nil, err
		}
		if run.Violations, err = m.Violations(joinstate.Filter{}); err != nil {
			return nil, err
		}
	}
	cancel()
	if err := <-done; err != nil && ctx.Err() == nil {
		return nil, err
	}
	run.PeakRSS = int64(ReadMem().HWM)
	return run, nil
}

// Verdict sums a comparison with the truth over every rule: exact when
// nothing is missed, false or duplicated.
func Verdict(scores map[string]*sim.Score) (found, injected int, exact bool, detail string) {
	exact = true
	var bad []string
	names := make([]string, 0, len(scores))
	for n := range scores {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := scores[n]
		found += s.Found
		injected += s.Injected
		if s.Missed > 0 || s.FalsePositives > 0 || s.Duplicates > 0 || s.Found != s.Injected {
			exact = false
			bad = append(bad, fmt.Sprintf("%s: %d of %d found, %d missed %v, %d false %v, %d duplicates",
				n, s.Found, s.Injected, s.Missed, s.MissedKeys, s.FalsePositives, s.FalseKeys, s.Duplicates))
		}
	}
	return found, injected, exact, strings.Join(bad, "; ")
}

// stats is the consumer's progress as the monitor reports it.
type stats = consumer.Stats

// liveEntries is the state the rules keep, as the consumer counts it.
func liveEntries(s stats) int64 { return s.LiveEntries }

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is the machine's CPU time from /proc/stat, in seconds over all
// cores: busy (everything but idle and iowait) and total. Guest time is in
// user time already, so it is not added again.
type machineCPU struct{ busy, total float64 }

func readMachineCPU() machineCPU {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return machineCPU{}
	}
	st, err := fs.Stat()
	if err != nil {
		return machineCPU{}
	}
	c := st.CPUTotal
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
	return machineCPU{busy: busy, total: busy + c.Idle + c.Iowait}
}

// coresBusySince is how many cores were busy on average since then.
func (m machineCPU) coresBusySince(then machineCPU) float64 {
	if then.total == 0 || m.total <= then.total {
		return 0
	}
	return (m.busy - then.busy) / (m.total - then.total) * float64(runtime.NumCPU())
}

// gatherStages reads the consumer's batch stage metrics.
func (r *Run) gatherStages(g prometheus.Gatherer) error {
	mfs, err := g.Gather()
	if err != nil {
		return err
	}
	r.Stages = map[string]StageTime{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "invmon_batch_stage_seconds":
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "stage" {
						r.Stages[l.GetValue()] = StageTime{Count: m.GetHistogram().GetSampleCount(), Seconds: m.GetHistogram().GetSampleSum()}
					}
				}
			}
		case "invmon_batch_records":
			for _, m := range mf.GetMetric() {
				r.Batches, r.BatchRecords = int64(m.GetHistogram().GetSampleCount()), int64(m.GetHistogram().GetSampleSum())
			}
		}
	}
	return nil
}
