package main

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/invmon/invmon/internal/bench"
)

// TestBenchMeasuresEachMonitorsOwnPeakRSS runs one benchmark monitor in a
// child process, as `monitor bench` does, while its parent holds 256 MiB
// resident, as the bench holds the domain it produced: the peak RSS
// reported must be the child's own, far below that.
//
// The parent is a process of its own (this test, run again with
// INVMON_TEST_BALLAST=1): on Linux a process's peak RSS is passed on to
// every child it forks afterwards, so the ballast would inflate the rusage
// other tests of this package read from their children.
func TestBenchMeasuresEachMonitorsOwnPeakRSS(t *testing.T) {
	if os.Getenv("INVMON_TEST_BALLAST") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBenchMeasuresEachMonitorsOwnPeakRSS$", "-test.v")
		cmd.Env = append(os.Environ(), "INVMON_TEST_BALLAST=1")
		out, err := cmd.CombinedOutput()
		t.Logf("the ballast process:\n%s", out)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	const ballastSize = 256 << 20
	// The bench's child is this test binary acting as the monitor command.
	t.Setenv("INVMON_TEST_MAIN", "1")
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := bench.PrepareDomain(ctx, brokers, "rss-", 2000, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	rule := bench.ExampleRuleNames()[0]
	_, topics, err := bench.ExampleRules(d.Prefix, rule)
	if err != nil {
		t.Fatal(err)
	}
	ballast := make([]byte, ballastSize)
	for i := 0; i < len(ballast); i += 4096 {
		ballast[i] = 1 // resident, not only reserved
	}
	res, peak, err := childRunner(brokers)(ctx, d, "rss-group", []string{rule}, d.Events(topics...), false)
	runtime.KeepAlive(ballast)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != int64(d.Events(topics...)) {
		t.Fatalf("the child handled %d of %d records", res.Records, d.Events(topics...))
	}
	t.Logf("child's peak RSS %d MiB while this process held %d MiB", peak>>20, ballastSize>>20)
	if peak <= 0 || peak >= ballastSize*3/4 {
		t.Fatalf("child's peak RSS %d MiB: not its own (this process holds %d MiB)", peak>>20, ballastSize>>20)
	}
}
