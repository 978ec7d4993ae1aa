package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/invmon/invmon/internal/sim"
)

// inProcess runs each monitor of the benchmark in the test's process.
func inProcess(t *testing.T, brokers []string) MonitorRunner {
	return func(ctx context.Context, d *Domain, group string, names []string, want int, verdicts bool) (*Run, int64, error) {
		rs, _, err := ExampleRules(d.Prefix, names...)
		if err != nil {
			return nil, 0, err
		}
		run, err := MonitorDomain(ctx, brokers, group, rs, want, t.TempDir(), verdicts)
		if err != nil {
			return nil, 0, err
		}
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return run, ru.Maxrss << 10, nil
	}
}

// TestFiveRuleBenchOnKfake runs a small five-rule benchmark on an
// in-process cluster: it must print every figure for each rule alone and
// for all five together, and the five-rule run's violations must equal the
// scenario's truth exactly. Timings are printed, never asserted.
func TestFiveRuleBenchOnKfake(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Five(ctx, FiveOptions{Brokers: brokers, Prefix: "smoke-", Events: 20_000, Partitions: 2, Seed: 3,
		PerRule: true, Progress: os.Stderr}, inProcess(t, brokers))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Log("\n" + out.String())

	if len(rep.Rows) != 6 {
		t.Fatalf("rows = %d, want each of the five rules alone and then all five", len(rep.Rows))
	}
	total := 0
	for _, topic := range sim.Topics {
		if rep.Records[topic] == 0 {
			t.Errorf("no %s records produced", topic)
		}
		total += rep.Records[topic]
	}
	if rep.Events != total || rep.All().Events != total {
		t.Errorf("events = %d, five-rule run read %d, want every record of the five topics (%d)", rep.Events, rep.All().Events, total)
	}
	for i, name := range ExampleRuleNames() {
		if rep.Rows[i].Rule != name {
			t.Errorf("row %d is %q, want %q", i, rep.Rows[i].Rule, name)
		}
	}
	for _, row := range rep.Rows {
		if row.Events <= 0 || row.Rate <= 0 || row.BareRate <= 0 || row.PeakRSS <= 0 {
			t.Errorf("%s: a figure is missing: %+v", row.Rule, row)
		}
	}
	if rep.All().LiveEntries <= 0 {
		t.Errorf("five-rule run keeps no live state entries: %+v", rep.All())
	}
	found, injected, exact, detail := Verdict(rep.Scores)
	if !exact || injected == 0 {
		t.Errorf("five-rule verdicts are not the truth (%d of %d found): %s", found, injected, detail)
	}
	for _, name := range ExampleRuleNames() {
		s := rep.Scores[name]
		if s == nil || s.Injected == 0 {
			t.Errorf("%s: no violation injected, the verdict says nothing about it", name)
		}
	}
	for _, want := range []string{"events:", "bare franz-go consumer:", "monitor / bare consumer:", "monitor peak RSS:",
		"live state entries:", fmt.Sprintf("violations found:            %d of %d injected (exact)", injected, injected), "all five rules"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}
