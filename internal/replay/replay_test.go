package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"go.uber.org/goleak"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/demo"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/replay"
	"github.com/invmon/invmon/internal/replay/replaytest"
	"github.com/invmon/invmon/internal/report"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/schema"
	"github.com/invmon/invmon/internal/sim"
	examplerules "github.com/invmon/invmon/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture is a friday-rollback incident on an in-process kfake cluster.
type fixture struct {
	ds       *sim.Dataset
	cfg      config.Config
	from, to time.Time
	brokers  string
	events   int
}

// newFixture produces the incident; encode, when given, re-encodes the
// events before they are produced.
func newFixture(t *testing.T, payments int, encode ...func([]sim.Event)) *fixture {
	t.Helper()
	topics := map[string]int32{}
	for _, tp := range sim.Topics {
		topics[tp] = 3
	}
	brokers := kafkatest.Fake(t, topics)
	start := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	ds, err := sim.Generate("friday-rollback", 7, sim.Options{Payments: payments, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produced := ds.Events
	for _, e := range encode {
		// A copy: the truth is computed from the JSON events.
		produced = slices.Clone(ds.Events)
		e(produced)
	}
	if err := sim.Produce(context.Background(), cl, produced); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Kafka.Brokers = []string{brokers}
	cfg.RuleFiles = []string{replaytest.WriteRules(t, t.TempDir(), "")}
	// The incident is the middle third of the payments (20 per second); the
	// window cuts through it so that some injected violations fall outside.
	span := time.Duration(payments) * 50 * time.Millisecond
	return &fixture{ds: ds, cfg: cfg, brokers: brokers, events: len(ds.Events),
		from: start.Add(span * 4 / 10), to: start.Add(span * 6 / 10)}
}

func (f *fixture) options(dir string) replay.Options {
	return replay.Options{Config: f.cfg, From: f.from, To: f.to, LeadIn: -1, ReportDir: dir, CheckpointInterval: 50 * time.Millisecond}
}

// findings returns "rule key state" lines, sorted.
func findings(r *report.Report) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.Rule+" "+f.Key+" "+f.State)
	}
	sort.Strings(out)
	return out
}

func truth(t *testing.T, f *fixture) []string {
	t.Helper()
	want, err := replaytest.TruthInWindow(f.ds, f.from, f.to)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range want {
		state := "open"
		if v.Resolved {
			state = "resolved"
		}
		out = append(out, v.Rule+" "+v.Key+" "+state)
	}
	sort.Strings(out)
	return out
}

// comparable returns the report without what differs between executions.
func comparable(t *testing.T, r *report.Report) string {
	t.Helper()
	c := *r
	c.Run = report.Run{}
	b, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReplayFindsTheTruthInTheWindow(t *testing.T) {
	f := newFixture(t, 1500)
	rep, err := replay.Run(context.Background(), f.options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	got, want := findings(rep), truth(t, f)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("findings differ from the truth in the window\ngot  %d: %v\nwant %d: %v", len(got), got, len(want), want)
	}
	rules := map[string]bool{}
	for _, w := range want {
		rules[strings.Fields(w)[0]] = true
	}
	if len(rules) < 4 {
		t.Errorf("the window holds violations of only %d rules; widen it", len(rules))
	}
	var read int64
	for _, c := range rep.Coverage {
		if !c.Covered {
			t.Errorf("%s[%d] not covered: %s", c.Topic, c.Partition, c.Problem)
		}
		read += c.RecordsRead
	}
	if read != int64(f.events) {
		t.Errorf("read %d records, produced %d", read, f.events)
	}
	for _, r := range rep.Rules {
		if r.Open > 0 && r.Verdict != report.Fail {
			t.Errorf("%s has %d open findings but verdict %s", r.Name, r.Open, r.Verdict)
		}
		if r.EntitiesChecked < r.EntitiesViolating || r.EntitiesChecked == 0 {
			t.Errorf("%s: %d entities checked, %d violating", r.Name, r.EntitiesChecked, r.EntitiesViolating)
		}
		if r.JudgedThrough.Before(f.to.Add(time.Duration(r.Reach))) {
			t.Errorf("%s judged only through %s", r.Name, r.JudgedThrough)
		}
		// The incident window is judged against each rule's objective too:
		// its share of violating entities spends far more than a 0.1 % (or
		// smaller) budget.
		ratio := float64(r.EntitiesViolating) / float64(r.EntitiesChecked)
		if r.Objective == 0 || r.ErrorRatio != ratio {
			t.Errorf("%s: objective %v, error ratio %v, want the rule's objective and %v", r.Name, r.Objective, r.ErrorRatio, ratio)
		}
		want := report.BudgetWithin
		if ratio > 1-r.Objective {
			want = report.BudgetExhausted
		}
		if r.Budget != want || (r.EntitiesViolating > 0 && r.Objective >= 0.99 && ratio > 0.01 && r.Budget != report.BudgetExhausted) {
			t.Errorf("%s: %d of %d entities violating against %v: %q", r.Name, r.EntitiesViolating, r.EntitiesChecked, r.Objective, r.Budget)
		}
		t.Logf("%-42s %4d of %5d entities violating (%.2f %%) against %v: %s", r.Name, r.EntitiesViolating, r.EntitiesChecked, ratio*100, r.Objective, r.Budget)
	}
	if rep.OutsideWindow.BeforeWindow == 0 || rep.OutsideWindow.AfterWindow == 0 {
		t.Errorf("outside the window: %+v; the incident extends on both sides", rep.OutsideWindow)
	}
	if len(rep.Customers) == 0 {
		t.Error("no affected customers")
	}
}

func TestReplayResumedEqualsUninterrupted(t *testing.T) {
	f := newFixture(t, 1500)
	whole, err := replay.Run(context.Background(), f.options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	o := f.options(dir)
	o.Rate = 4000
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	if _, err := replay.Run(ctx, o); !errors.Is(err, replay.ErrInterrupted) {
		t.Fatalf("interrupted replay: %v, want ErrInterrupted", err)
	}
	o = replay.Options{Config: f.cfg, ReportDir: dir, Resume: true, CheckpointInterval: 50 * time.Millisecond}
	resumed, err := replay.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if resumed.Run.Resumes != 1 || resumed.Run.RecordsThisRun >= int64(f.events) || resumed.Run.RecordsThisRun == 0 {
		t.Errorf("resumed run: %d resumes, read %d of %d records", resumed.Run.Resumes, resumed.Run.RecordsThisRun, f.events)
	}
	if a, b := comparable(t, whole), comparable(t, resumed); a != b {
		t.Fatalf("resumed report differs from the uninterrupted one:\n%s", replaytest.LineDiff(a, b))
	}
	// A finished replay resumed again only rebuilds its report.
	again, err := replay.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if again.Run.RecordsThisRun != 0 || comparable(t, again) != comparable(t, whole) {
		t.Errorf("resuming a finished replay read %d records or changed the report:\n%s", again.Run.RecordsThisRun, replaytest.LineDiff(comparable(t, whole), comparable(t, again)))
	}
	if _, err := replay.Run(context.Background(), f.options(dir)); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("a second replay into a used directory: %v, want a refusal naming --resume", err)
	}
}

func TestReplayDeletedRecordsAreNotCovered(t *testing.T) {
	f := newFixture(t, 600)
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(context.Background(), sim.TopicLedger)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(sim.TopicLedger, 1)
	cut := kadm.Offsets{}
	cut.Add(kadm.Offset{Topic: sim.TopicLedger, Partition: 1, At: end.Offset / 2})
	if _, err := adm.DeleteRecords(context.Background(), cut); err != nil {
		t.Fatal(err)
	}
	rep, err := replay.Run(context.Background(), f.options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Coverage {
		want := !(c.Topic == sim.TopicLedger && c.Partition == 1)
		if c.Covered != want {
			t.Errorf("%s[%d] covered %v (%s), want %v", c.Topic, c.Partition, c.Covered, c.Problem, want)
		}
	}
	for _, name := range []string{sim.RuleCapturedPaymentHasLedgerEntry, sim.RuleNoDuplicateLedgerEffect} {
		r := rep.RuleNamed(name)
		if r.Verdict != report.Fail || !strings.Contains(strings.Join(r.Reasons, "\n"), "ledger[1] not covered") {
			t.Errorf("%s: verdict %s, reasons %q: want fail naming ledger[1]", name, r.Verdict, r.Reasons)
		}
	}
	if r := rep.RuleNamed(sim.RulePaymentTransitionsAllowed); strings.Contains(strings.Join(r.Reasons, "\n"), "ledger") {
		t.Errorf("a rule that does not read the ledger fails for it: %q", r.Reasons)
	}
}

func TestReplayRateLimit(t *testing.T) {
	f := newFixture(t, 300)
	o := f.options(t.TempDir())
	o.Rate = 2000
	var progress bytes.Buffer
	o.Progress, o.ProgressInterval = &progress, 300*time.Millisecond
	start := time.Now()
	rep, err := replay.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if min := time.Duration(float64(f.events-2000/50) / 2000 * float64(time.Second)); elapsed < min {
		t.Errorf("%d records at 2000/s took %s, less than %s", f.events, elapsed, min)
	}
	if rep.Run.RecordsPerSecond > 2000*1.1 {
		t.Errorf("measured %.0f records/s with --rate 2000", rep.Run.RecordsPerSecond)
	}
	if !strings.Contains(progress.String(), "rec/s ETA") {
		t.Errorf("no plain progress lines:\n%s", progress.String())
	}
	t.Logf("%d records in %s: %.0f records/s", rep.Run.RecordsThisRun, elapsed, rep.Run.RecordsPerSecond)
}

func TestReplaySelectRules(t *testing.T) {
	f := newFixture(t, 300)
	o := f.options(t.TempDir())
	o.Rules = []string{sim.RuleNoDuplicateLedgerEffect}
	rep, err := replay.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rules) != 1 || rep.Rules[0].Name != sim.RuleNoDuplicateLedgerEffect {
		t.Fatalf("rules %v", rep.Window.Rules)
	}
	for _, c := range rep.Coverage {
		if c.Topic != sim.TopicLedger {
			t.Errorf("read %s, which the selected rule does not read", c.Topic)
		}
	}
	if rep.Window.LeadIn != report.Duration(24*time.Hour) {
		t.Errorf("lead-in %s, want the unique window 24h", rep.Window.LeadIn)
	}
	o = f.options(t.TempDir())
	o.Rules = []string{"no_such_rule"}
	if _, err := replay.Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "no_such_rule") {
		t.Errorf("unknown rule: %v", err)
	}
}

// TestReplayAvroFindsTheTruthInTheWindow replays the incident produced as
// Avro, with the example schemas in a real Schema Registry, through the
// same rule files with `format: avro`: the findings equal the JSON truth.
func TestReplayAvroFindsTheTruthInTheWindow(t *testing.T) {
	reg := kafkatest.StartSchemaRegistry(t)
	f := newFixture(t, 1500, func(events []sim.Event) {
		hc := &http.Client{}
		defer hc.CloseIdleConnections()
		cl, err := sr.NewClient(sr.URLs(reg.URL()), sr.HTTPClient(hc))
		if err != nil {
			t.Fatal(err)
		}
		enc, err := schema.RegisterSchemas(context.Background(), cl, rules.FormatAvro, examplerules.Schemas(), "", sim.Topics...)
		if err != nil {
			t.Fatal(err)
		}
		if err := demo.EncodeEvents(enc, events); err != nil {
			t.Fatal(err)
		}
	})
	files, err := filepath.Glob(f.cfg.RuleFiles[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, demo.WithFormat(b, rules.FormatAvro), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.cfg.SchemaRegistry.URLs = []string{reg.URL()}
	rep, err := replay.Run(context.Background(), f.options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	got, want := findings(rep), truth(t, f)
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(want) == 0 {
		t.Fatalf("findings differ from the truth in the window\ngot  %d: %v\nwant %d: %v", len(got), got, len(want), want)
	}
	if len(rep.DeadLetters) > 0 {
		t.Errorf("%d records rejected, the first: %+v", len(rep.DeadLetters), rep.DeadLetters[0])
	}
}
