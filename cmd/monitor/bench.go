package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/bench"
	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/joinstate"
)

func benchCmd() *cobra.Command {
	var (
		brokers    []string
		events     int
		partitions int32
		seed       uint64
		perRule    bool
		restore    int
		state      bool
		cacheSize  config.ByteSize = joinstate.DefaultCacheSize
		live       bench.LiveOptions
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the monitor with the five example rules over the example domain against a bare franz-go consumer on a real broker",
		Long: `bench produces the simulator's friday-rollback mix to the five example topics
(payments, ledger, orders, entitlements, the compacted accounts table), then
runs the monitor over them, each example rule alone (--per-rule) and all five
together, each in a child process beside a bare franz-go consumer of the same
topics in the same run. It prints events, rates, the share of the bare
consumer, peak RSS, live state entries and whether the five-rule run's
violations equal the scenario's truth.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state {
				return benchState(events, int(partitions), int64(cacheSize), live)
			}
			if len(brokers) == 0 {
				return fmt.Errorf("--brokers is required (or --state)")
			}
			ctx := cmd.Context()
			prefix := fmt.Sprintf("bench-%d-", time.Now().UnixNano())
			rep, err := bench.Five(ctx, bench.FiveOptions{Brokers: brokers, Prefix: prefix, Events: events,
				Partitions: partitions, Seed: seed, PerRule: perRule, Progress: os.Stderr}, childRunner(brokers))
			if err != nil {
				return err
			}
			rep.Budget = processMemory(config.Defaults().State.CacheSize)
			rep.Print(os.Stdout)
			if restore > 0 {
				fmt.Fprintf(os.Stderr, "bench: logging %d state entries to a changelog partition and restoring them ...\n", restore)
				took, err := bench.Restore(ctx, brokers, prefix, restore)
				if err != nil {
					return err
				}
				fmt.Printf("\nrestore %d state entries:  %.1f s (%.0f entries/s)\n", restore, took.Seconds(), float64(restore)/took.Seconds())
			}
			if _, _, exact, detail := bench.Verdict(rep.Scores); !exact {
				return fmt.Errorf("the five-rule run's violations differ from the truth: %s", detail)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", nil, "seed brokers of the Kafka cluster to measure on")
	f.IntVar(&events, "events", 1_000_000, "about how many events to produce over the five topics")
	f.Int32Var(&partitions, "partitions", 4, "partitions per topic")
	f.Uint64Var(&seed, "seed", 1, "the simulator's seed")
	f.BoolVar(&perRule, "per-rule", true, "also run each rule alone, for the per-rule cost table")
	f.IntVar(&restore, "restore-entries", 1_000_000, "also time restoring a partition of this many state entries from the changelog (0 skips)")
	f.BoolVar(&state, "state", false, "measure the state instead: the engine over Badger in this process (no Kafka), --events events whose keys stay live")
	f.Var(&cacheSize, "state.cache-size", "state.cache_size for --state")
	f.DurationVar(&live.Duration, "live", 20*time.Second, "for --state: after the fill, how long to inject absences into events produced live (event time = wall time) and measure their detection delay; the phase adds a warm-up and within + lateness to it (0 skips)")
	f.Float64Var(&live.Load, "live-load", 0.8, "for --state: the live rate as a share of the rate the fill measured over its last tenth")
	return cmd
}

// childRunner runs each monitor of the benchmark in a child process
// (bench-monitor), so that its peak RSS is measured alone: the child's own
// VmHWM, which it reports. Not the rusage of its exit: on Linux a child's
// ru_maxrss starts from its parent's peak RSS at the fork (the high-water
// mark is copied with the memory map, and kept across exec), so every
// monitor measured that way looked at least as large as the bench, which
// holds the produced domain (about 1 GiB at a million events).
func childRunner(brokers []string) bench.MonitorRunner {
	return func(ctx context.Context, d *bench.Domain, group string, names []string, want int, verdicts bool) (*bench.Run, int64, error) {
		dir, err := os.MkdirTemp("", "invmon-bench-")
		if err != nil {
			return nil, 0, err
		}
		defer os.RemoveAll(dir)
		self, err := os.Executable()
		if err != nil {
			return nil, 0, err
		}
		args := []string{"bench-monitor", "--brokers", strings.Join(brokers, ","), "--prefix", d.Prefix, "--group", group,
			"--records", strconv.Itoa(want), "--state-dir", dir, "--verdicts=" + strconv.FormatBool(verdicts)}
		if len(names) > 0 {
			args = append(args, "--rules", strings.Join(names, ","))
		}
		child := exec.CommandContext(ctx, self, args...)
		child.Stderr = os.Stderr
		out, err := child.Output()
		if err != nil {
			return nil, 0, fmt.Errorf("bench-monitor: %w", err)
		}
		var res bench.Run
		if err := json.Unmarshal(out, &res); err != nil {
			return nil, 0, fmt.Errorf("bench-monitor output: %w", err)
		}
		if res.PeakRSS > 0 {
			return &res, res.PeakRSS, nil
		}
		return &res, child.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10, nil
	}
}

// benchMonitorCmd is the child process of bench: one monitor run.
func benchMonitorCmd() *cobra.Command {
	var (
		brokers                 []string
		prefix, group, stateDir string
		ruleNames               []string
		records                 int
		verdicts                bool
	)
	cmd := &cobra.Command{
		Use:    "bench-monitor",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			stop, err := startCPUProfile()
			if err != nil {
				return err
			}
			defer stop()
			stopTrace, err := startTrace()
			if err != nil {
				return err
			}
			defer stopTrace()
			// The memory limit `monitor run` sets from state.cache_size, so the
			// peak RSS is measured against the same budget.
			setMemoryLimit(config.Defaults().State.CacheSize, zap.NewNop())
			rs, _, err := bench.ExampleRules(prefix, ruleNames...)
			if err != nil {
				return err
			}
			res, err := bench.MonitorDomain(cmd.Context(), brokers, group, rs, records, stateDir, verdicts)
			if err != nil {
				return err
			}
			// INVMON_MEMPROFILE=FILE writes a heap profile at the end: what the
			// peak RSS is made of.
			if path := os.Getenv("INVMON_MEMPROFILE"); path != "" {
				f, err := os.Create(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
					return err
				}
			}
			return json.NewEncoder(os.Stdout).Encode(res)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", nil, "")
	f.StringVar(&prefix, "prefix", "", "")
	f.StringVar(&group, "group", "", "")
	f.StringSliceVar(&ruleNames, "rules", nil, "")
	f.StringVar(&stateDir, "state-dir", "", "")
	f.IntVar(&records, "records", 0, "")
	f.BoolVar(&verdicts, "verdicts", false, "")
	return cmd
}

// benchState runs the state benchmark and prints its figures.
func benchState(events, partitions int, cacheSize int64, live bench.LiveOptions) error {
	dir, err := os.MkdirTemp("", "invmon-bench-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The memory limit `monitor run` sets from state.cache_size, so the
	// peak RSS is measured against the same budget.
	setMemoryLimit(config.ByteSize(cacheSize), zap.NewNop())
	stop, err := startCPUProfile()
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(os.Stderr, "bench --state: %d events over %d partitions, state.cache_size %s, in %s ...\n",
		events, partitions, config.ByteSize(cacheSize), dir)
	res, err := bench.State(dir, events, partitions, 2000, cacheSize, os.Stderr, live)
	if err != nil {
		return err
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("events:                      %d (%d partitions)\n", res.Events, partitions)
	fmt.Printf("live state entries:          %d\n", res.LiveEntries)
	fmt.Printf("rate:                        %.0f events/s (%.0f events/s over the last tenth)\n", float64(res.Events)/res.Elapsed.Seconds(), res.TailRate)
	fmt.Printf("peak RSS:                    %.0f MiB", float64(ru.Maxrss<<10)/(1<<20))
	if res.Live != nil {
		fmt.Printf(" (%.0f MiB before the live phase)", float64(res.Live.PeakRSSBefore)/(1<<20))
	}
	fmt.Println()
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	for _, m := range []struct {
		name  string
		peaks bench.MemPeaks
	}{{"fill", res.FillMem}, {"whole run", res.Mem}} {
		fmt.Printf("memory peaks, %-10s     RSS %.0f MiB, anonymous %.0f MiB, file-backed %.0f MiB, Go heap objects %.0f MiB (Badger's table builders %.0f MiB), Go mapped %.0f MiB; VmHWM %.0f MiB (each its own peak over %d samples, every %s)\n",
			m.name+":", mib(m.peaks.RSS), mib(m.peaks.Anon), mib(m.peaks.File), mib(m.peaks.GoHeap), mib(m.peaks.Builders), mib(m.peaks.GoMapped), mib(m.peaks.HWM),
			m.peaks.Samples, bench.MemSampleEvery)
		fmt.Printf("  file-backed by kind, peaks: Badger tables %.0f MiB (of them not in the LSM tree, a compaction's new tables or replaced ones still read, %.0f MiB), memtable and value logs %.0f MiB, other files (the binary) %.0f MiB (every %s)\n",
			mib(m.peaks.Mapped.Tables), mib(m.peaks.Mapped.Unlisted), mib(m.peaks.Mapped.Logs), mib(m.peaks.Mapped.Other), bench.MappedEvery*bench.MemSampleEvery)
	}
	fmt.Printf("Go heap in use at the end:   %.0f MiB\n", float64(res.HeapInUse)/(1<<20))
	fmt.Printf("GC share of CPU:             %.1f%%\n", 100*res.GCShare)
	fmt.Printf("Badger size on disk:         %.0f MiB\n", float64(res.DiskBytes)/(1<<20))
	fmt.Printf("restart to ready:            %.3f s\n", res.Restart.Seconds())
	fmt.Printf("then first record durable:   %.3f s\n", res.FirstRecord.Seconds())
	if l := res.Live; l != nil {
		fmt.Printf("live load:                   %.0f events/s paced (%.0f%% of the last tenth's rate), %d events in %.1f s, warm-up %.1f s, largest lag %.3f s\n",
			l.Rate, 100*l.Rate/res.TailRate, l.Events, l.Elapsed.Seconds(), l.Warmup.Seconds(), l.MaxLag.Seconds())
		fmt.Printf("absences injected / found:   %d / %d (%d missing, %d unexpected)\n", l.Injected, len(l.Delays), len(l.Missing), len(l.Unexpected))
		fmt.Printf("detection delay past deadline + lateness: p50 %.3f s, p99 %.3f s, max %.3f s (%d violations)\n",
			l.Quantile(0.5).Seconds(), l.Quantile(0.99).Seconds(), l.Quantile(1).Seconds(), len(l.Delays))
		q := func(d []time.Duration) string {
			return fmt.Sprintf("p50 %.3f s, p99 %.3f s, max %.3f s", bench.Quantile(d, 0.5).Seconds(), bench.Quantile(d, 0.99).Seconds(), bench.Quantile(d, 1).Seconds())
		}
		fmt.Printf("cycles after the warm-up:    %d, take → durable %s; of it advance %s, synced commit %s\n",
			len(l.Cycles), q(l.Cycles), q(l.Advances), q(l.Syncs))
		if !l.Exact() {
			return fmt.Errorf("the live phase's violations are not exactly the injected ones: missing %s, unexpected %s",
				firstFew(l.Missing), firstFew(l.Unexpected))
		}
	}
	return nil
}

// firstFew lists up to five of ids, and how many more there are.
func firstFew(ids []string) string {
	if len(ids) <= 5 {
		return fmt.Sprint(ids)
	}
	return fmt.Sprintf("%v and %d more", ids[:5], len(ids)-5)
}

// startTrace writes a Go execution trace of the process into the file
// INVMON_TRACE names, when it is set: what the goroutines wait for, with the
// consumer's batch stages as regions (go tool trace FILE). The returned stop
// ends the trace and closes the file.
func startTrace() (stop func(), err error) {
	path := os.Getenv("INVMON_TRACE")
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { trace.Stop(); f.Close() }, nil
}

// startCPUProfile profiles the process into the file INVMON_CPUPROFILE names,
// when it is set: where a benchmark's time goes. The returned stop ends the
// profile and closes the file.
func startCPUProfile() (stop func(), err error) {
	path := os.Getenv("INVMON_CPUPROFILE")
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
