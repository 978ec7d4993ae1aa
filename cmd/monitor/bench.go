package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/invmon/invmon/internal/bench"
	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/joinstate"
)

func benchCmd() *cobra.Command {
	var (
		brokers    []string
		events     int
		partitions int32
		restore    int
		state      bool
		cacheSize  config.ByteSize = joinstate.DefaultCacheSize
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the monitor's end-to-end rate against a bare franz-go consumer on a real broker",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state {
				return benchState(events, int(partitions), int64(cacheSize))
			}
			if len(brokers) == 0 {
				return fmt.Errorf("--brokers is required (or --state)")
			}
			ctx := cmd.Context()
			prefix := fmt.Sprintf("bench-%d-", time.Now().UnixNano())
			fmt.Fprintf(os.Stderr, "bench: producing %d events to %s on %v ...\n", events, prefix+"{payments,ledger}", brokers)
			payments, ledger, n, err := bench.Prepare(ctx, brokers, prefix, events, partitions)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "bench: reading them with a bare franz-go consumer ...\n")
			raw, err := bench.RawConsume(ctx, brokers, n, payments, ledger)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "bench: running the monitor (absence rule, Badger state on disk) in a child process ...\n")
			dir, err := os.MkdirTemp("", "invmon-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			self, err := os.Executable()
			if err != nil {
				return err
			}
			child := exec.CommandContext(ctx, self, "bench-monitor", "--brokers", brokers[0], "--payments", payments,
				"--ledger", ledger, "--records", strconv.Itoa(n), "--state-dir", dir)
			child.Stderr = os.Stderr
			out, err := child.Output()
			if err != nil {
				return fmt.Errorf("monitor run: %w", err)
			}
			var res struct{ ElapsedNS int64 }
			if err := json.Unmarshal(out, &res); err != nil {
				return fmt.Errorf("monitor run output %q: %w", out, err)
			}
			rss := child.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
			rawRate := float64(n) / raw.Seconds()
			monRate := float64(n) / time.Duration(res.ElapsedNS).Seconds()
			fmt.Printf("events:                      %d (%d partitions per topic)\n", n, partitions)
			fmt.Printf("raw franz-go consume rate:   %.0f events/s\n", rawRate)
			fmt.Printf("monitor end-to-end rate:     %.0f events/s\n", monRate)
			fmt.Printf("monitor / raw:               %.1f%%\n", 100*monRate/rawRate)
			fmt.Printf("monitor peak RSS:            %.0f MiB\n", float64(rss)/(1<<20))
			if restore > 0 {
				fmt.Fprintf(os.Stderr, "bench: logging %d state entries to a changelog partition and restoring them ...\n", restore)
				took, err := bench.Restore(ctx, brokers, prefix, restore)
				if err != nil {
					return err
				}
				fmt.Printf("restore %d state entries:  %.1f s (%.0f entries/s)\n", restore, took.Seconds(), float64(restore)/took.Seconds())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", nil, "seed brokers of the Kafka cluster to measure on")
	f.IntVar(&events, "events", 2_000_000, "events to produce and consume")
	f.Int32Var(&partitions, "partitions", 4, "partitions per topic")
	f.IntVar(&restore, "restore-entries", 1_000_000, "also time restoring a partition of this many state entries from the changelog (0 skips)")
	f.BoolVar(&state, "state", false, "measure the state instead: the engine over Badger in this process (no Kafka), --events events whose keys stay live")
	f.Var(&cacheSize, "state.cache-size", "state.cache_size for --state")
	return cmd
}

// benchMonitorCmd is the child process of bench, so that the monitor's peak
// RSS is measured alone.
func benchMonitorCmd() *cobra.Command {
	var (
		brokers, payments, ledger, stateDir string
		records                             int
	)
	cmd := &cobra.Command{
		Use:    "bench-monitor",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// INVMON_CPUPROFILE=FILE profiles the monitor: where the time goes.
			if path := os.Getenv("INVMON_CPUPROFILE"); path != "" {
				f, err := os.Create(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			d, err := bench.Monitor(cmd.Context(), []string{brokers}, payments, ledger, records, stateDir)
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
			return json.NewEncoder(os.Stdout).Encode(map[string]int64{"ElapsedNS": d.Nanoseconds()})
		},
	}
	f := cmd.Flags()
	f.StringVar(&brokers, "brokers", "", "")
	f.StringVar(&payments, "payments", "", "")
	f.StringVar(&ledger, "ledger", "", "")
	f.StringVar(&stateDir, "state-dir", "", "")
	f.IntVar(&records, "records", 0, "")
	return cmd
}

// benchState runs the state benchmark and prints its figures.
func benchState(events, partitions int, cacheSize int64) error {
	dir, err := os.MkdirTemp("", "invmon-bench-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	debug.SetMemoryLimit(cacheSize + 192<<20)
	// INVMON_CPUPROFILE=FILE profiles the run: where the time goes.
	if path := os.Getenv("INVMON_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(os.Stderr, "bench --state: %d events over %d partitions, state.cache_size %s, in %s ...\n",
		events, partitions, config.ByteSize(cacheSize), dir)
	res, err := bench.State(dir, events, partitions, 2000, cacheSize, os.Stderr)
	if err != nil {
		return err
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("events:                      %d (%d partitions)\n", res.Events, partitions)
	fmt.Printf("live state entries:          %d\n", res.LiveEntries)
	fmt.Printf("rate:                        %.0f events/s\n", float64(res.Events)/res.Elapsed.Seconds())
	fmt.Printf("peak RSS:                    %.0f MiB\n", float64(ru.Maxrss<<10)/(1<<20))
	fmt.Printf("Go heap in use at the end:   %.0f MiB\n", float64(res.HeapInUse)/(1<<20))
	fmt.Printf("GC share of CPU:             %.1f%%\n", 100*res.GCShare)
	fmt.Printf("Badger size on disk:         %.0f MiB\n", float64(res.DiskBytes)/(1<<20))
	fmt.Printf("restart to ready:            %.3f s\n", res.Restart.Seconds())
	fmt.Printf("then first record durable:   %.3f s\n", res.FirstRecord.Seconds())
	return nil
}
