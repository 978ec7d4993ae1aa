// Package demo runs a simulated incident through the monitor on an
// in-process Kafka cluster and scores what it found against the truth.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/schema"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/violation"
	examplerules "github.com/invmon/invmon/rules"
)

// Options configure a demo run.
type Options struct {
	// Scenario is a sim scenario. Default "friday-rollback".
	Scenario string
	// Seed makes the run reproducible. Default 1.
	Seed uint64
	// Payments is the number of simulated payments. Default 5000.
	Payments int
	// Partitions per topic. Default 4.
	Partitions int32
	// AlertmanagerURLs, when set, receive the demo's alerts.
	AlertmanagerURLs []string
	// Timeout bounds the whole run. Default 2m.
	Timeout time.Duration
	// Brokers, when set, run the demo on that cluster instead of an
	// in-process one; the topics are created with TopicPrefix.
	Brokers []string
	// TopicPrefix prefixes every topic, so runs on one cluster never mix.
	TopicPrefix string
	// Poison, when above zero, inserts that fraction of malformed records of
	// every kind (sim.Poison) among the payments and ledger events.
	Poison float64
	// Live produces the scenario as it happens: event times start now and
	// each event is produced when its time comes, so detection delays can be
	// measured in wall time too. The run then lasts as long as the scenario.
	Live bool
	// LiveFor, in a live run, drops the events later than this after the
	// start, so the run ends; the truth no longer holds then, and the run
	// measures detection delays only. Default: keep everything.
	LiveFor time.Duration
	// Rate is the scenario's payments per second. Default the simulator's.
	Rate float64
	// HoldStall is how long a stalled producer (lagging-ledger) stays stalled
	// after the monitor reports it blind, so that the blind alert has time to
	// reach Alertmanager and its receivers. Default 0.
	HoldStall time.Duration
	// Format is how the events are encoded: json (the default), avro or
	// protobuf. The last two register rules/schemas/ in SchemaRegistry and
	// add `format:` to every stream of the example rules, which are
	// otherwise the same files.
	Format string
	// SchemaRegistry is the registry's URL; required with Format avro or
	// protobuf.
	SchemaRegistry string
	// HTTPListen is the monitor's HTTP address. Default "127.0.0.1:0" (a
	// free port); a test whose Prometheus scrapes the monitor from the start
	// fixes it.
	HTTPListen string
	// Logger. Default no-op.
	Logger *zap.Logger
	// Progress, when set, receives one line per phase.
	Progress func(string)
	// Inspect, when set, is called once the verdict is in, while the
	// monitor still runs and serves its HTTP interface at addr (the console
	// at "/", the API): `monitor demo --serve` and the console test use it.
	// An error from it fails the run.
	Inspect func(ctx context.Context, addr string) error
	// Midway, when set, splits a one-phase scenario in two halves: the
	// monitor reads the first, then Midway runs, then the second half is
	// encoded and produced. Tests use it to change the world mid-stream:
	// register a new schema version with Midway.Encoder, stop the registry.
	// An error from it fails the run.
	Midway func(ctx context.Context, mid Midway) error
}

// Midway is what Options.Midway may act on.
type Midway struct {
	// Monitor is the running monitor.
	Monitor *monitor.Monitor
	// Encoder encodes the second half (nil for JSON); a schema registered
	// with it now applies to the events produced after Midway returns.
	Encoder *schema.Encoder
	// Registry is a client of the Schema Registry (nil for JSON).
	Registry *sr.Client
	// Produced is how many events the first half had.
	Produced int
}

// Result is what the demo found.
type Result struct {
	Scenario string                `json:"scenario"`
	Seed     uint64                `json:"seed"`
	Events   int                   `json:"events"`
	Rules    map[string]*sim.Score `json:"rules"`
	Traps    map[string]int        `json:"traps"`
	// Delays are per rule detection delays in event time (watermark at
	// detection minus deadline), for violations judged at a deadline.
	Delays map[string]Delay `json:"detection_delay_event_time,omitempty"`
	// WallDelays are, in a live run, per rule detection delays in wall time
	// (detected_at minus the deadline, event time being wall time there).
	WallDelays map[string]Delay `json:"detection_delay_wall_time,omitempty"`
	// Poisoned counts the malformed records inserted, per reason, and
	// DeadLetters those the monitor sent to its dead-letter topic (DLQTopic).
	Poisoned    map[string]int `json:"poisoned,omitempty"`
	DeadLetters int64          `json:"dead_letters"`
	DLQTopic    string         `json:"dlq_topic"`
	// Blind lists the streams the monitor reported blind during the run, and
	// BlindAfter those still blind at its end.
	Blind      []string `json:"blind,omitempty"`
	BlindAfter []string `json:"blind_at_end,omitempty"`
	// Open is, per rule, what is still open at the end: what its alert and
	// the console show.
	Open map[string]Open `json:"open"`
	// Checks is, per rule, the checks and violations the monitor counted
	// (invmon_checks_total, invmon_violations_total) beside the simulator's
	// counts.
	Checks  map[string]Checks `json:"checks"`
	Elapsed time.Duration     `json:"-"`
}

// Checks compares one rule's SLI counters with the ground truth.
type Checks struct {
	Counted         int `json:"counted"`
	Expected        int `json:"expected"`
	Violations      int `json:"violations"`
	ViolationsTruth int `json:"violations_expected"`
}

// Open is one rule's open violations at the end of the demo.
type Open struct {
	Violations int `json:"violations"`
	Customers  int `json:"customers"`
	// Impact is their summed impact rounded to the unit's precision;
	// omitted for a rule without impact.value, whose impact is its count.
	Impact *float64 `json:"impact,omitempty"`
	Unit   string   `json:"unit,omitempty"`
	// Text is the impact as a person reads it ("60,736.68 USD").
	Text string `json:"text"`
}

// Delay summarizes detection delays.
type Delay struct {
	P50Seconds float64 `json:"p50_seconds"`
	P99Seconds float64 `json:"p99_seconds"`
	N          int     `json:"n"`
}

// Run executes the demo.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Scenario == "" {
		o.Scenario = "friday-rollback"
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	names, sources, err := examplerules.Files()
	if err != nil {
		return nil, err
	}
	if o.Format != "" && o.Format != rules.FormatJSON {
		for n, src := range sources {
			sources[n] = WithFormat(src, o.Format)
		}
	}
	rs, err := rules.Parse(names, sources)
	if err != nil {
		return nil, fmt.Errorf("example rules: %w", err)
	}
	simOpts := sim.Options{Payments: o.Payments, Rate: o.Rate}
	if o.Live {
		// The traffic starts a moment ahead, so the first events are not
		// already late when they are produced.
		simOpts.Start = time.Now().Add(2 * time.Second).Truncate(time.Millisecond)
	}
	ds, err := sim.Generate(o.Scenario, o.Seed, simOpts)
	if err != nil {
		return nil, err
	}
	if o.Live && o.LiveFor > 0 {
		end := simOpts.Start.Add(o.LiveFor)
		kept := ds.Events[:0]
		for _, e := range ds.Events {
			if e.Time.Before(end) {
				kept = append(kept, e)
			}
		}
		ds.Events = kept
	}
	var poisoned []sim.Poisoned
	if o.Poison > 0 {
		ds.Events, poisoned = sim.Poison(ds.Events, o.Poison, o.Seed)
	}
	for _, st := range rs.Streams {
		st.Topic = o.TopicPrefix + st.Topic
		st.Subject = o.TopicPrefix + st.Subject
	}
	for i := range ds.Events {
		ds.Events[i].Topic = o.TopicPrefix + ds.Events[i].Topic
	}
	topics := make([]string, len(sim.Topics))
	for i, t := range sim.Topics {
		topics[i] = o.TopicPrefix + t
	}
	brokers := o.Brokers
	if len(brokers) == 0 {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(o.Partitions, topics...))
		if err != nil {
			return nil, fmt.Errorf("in-process kafka: %w", err)
		}
		defer cluster.Close()
		brokers = cluster.ListenAddrs()
		progress(fmt.Sprintf("started an in-process Kafka cluster (%d partitions per topic)", o.Partitions))
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return nil, err
	}
	if len(o.Brokers) > 0 {
		if _, err := kadm.NewClient(producer).CreateTopics(ctx, o.Partitions, 1, nil, topics...); err != nil {
			producer.Close()
			return nil, fmt.Errorf("create topics: %w", err)
		}
	}
	defer producer.Close()
	enc, srcl, err := registerSchemas(ctx, o)
	if err != nil {
		return nil, err
	}

	cfg := config.Defaults()
	if o.SchemaRegistry != "" {
		cfg.SchemaRegistry.URLs = []string{o.SchemaRegistry}
	}
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Group = o.TopicPrefix + "invmon-demo"
	// The verdict is read back through the HTTP API, as a user would.
	cfg.HTTP.Listen = "127.0.0.1:0"
	if o.HTTPListen != "" {
		cfg.HTTP.Listen = o.HTTPListen
	}
	cfg.Alertmanager.URLs = o.AlertmanagerURLs
	dir, err := os.MkdirTemp("", "invmon-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg.StateDir = dir
	m, err := monitor.New(ctx, monitor.Options{Config: cfg, Rules: rs, Logger: o.Logger, TickInterval: 250 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	// The scenario is produced and awaited under live, which ends as soon as
	// the monitor stops: a monitor that failed must not leave the demo
	// producing and waiting for the whole run.
	live, liveStop := context.WithCancel(ctx)
	defer liveStop()
	go func() {
		err := m.Run(runCtx)
		liveStop()
		done <- err
	}()
	fail := func(err error) (*Result, error) {
		stop()
		if rerr := <-done; rerr != nil && !errors.Is(rerr, context.Canceled) {
			return nil, fmt.Errorf("monitor stopped: %w", rerr)
		}
		return nil, err
	}

	blind := map[string]bool{}
	phases := ds.Phases()
	if o.Midway != nil && len(phases) == 1 {
		half := len(phases[0]) / 2
		phases = [][]sim.Event{phases[0][:half], phases[0][half:]}
	}
	produced := 0
	for i, phase := range phases {
		produce := sim.Produce
		if o.Live {
			produce = sim.ProduceLive
		}
		if i == 1 && o.Midway != nil {
			if err := o.Midway(ctx, Midway{Monitor: m, Encoder: enc, Registry: srcl, Produced: produced}); err != nil {
				return fail(err)
			}
		}
		if enc != nil {
			if err := EncodeEvents(enc, phase); err != nil {
				return fail(err)
			}
		}
		if err := produce(live, producer, phase); err != nil {
			return fail(err)
		}
		produced += len(phase)
		progress(fmt.Sprintf("produced scenario %q (seed %d): %d of %d events", o.Scenario, o.Seed, produced, len(ds.Events)))
		if i == len(phases)-1 {
			break
		}
		if err := waitRead(live, m, int64(produced)); err != nil {
			return fail(err)
		}
		if i == 1 && !ds.StallFrom.IsZero() {
			// Payments went on while the ledger stalled: the monitor must say
			// it is blind, page about it, and judge nothing meanwhile.
			if err := waitBlind(live, m, sim.TopicLedger); err != nil {
				return fail(err)
			}
			for _, s := range m.BlindStreams() {
				blind[s] = true
			}
			if err := m.FlushAlerts(ctx); err != nil {
				o.Logger.Warn("send alerts", zap.Error(err))
			}
			select {
			case <-ctx.Done():
				return fail(ctx.Err())
			case <-time.After(o.HoldStall):
			}
			progress("the monitor reports the stalled ledger as blind; the producer now catches up")
		}
	}
	progress("monitor running; waiting until every input is read and every deadline has passed")
	// Backlog: the data lies in the past, so once the inputs are idle the
	// watermarks follow the clock past every deadline. Live: wait for the
	// watermark to pass the last event by the rules' 30s windows.
	target := time.Now().Add(-time.Minute)
	if o.Live && len(ds.Events) > 0 {
		target = ds.Events[len(ds.Events)-1].Time.Add(40 * time.Second)
	}
	if err := waitSettled(live, m, int64(len(ds.Events)), target); err != nil {
		return fail(err)
	}
	if len(o.AlertmanagerURLs) > 0 {
		if err := m.FlushAlerts(ctx); err != nil {
			o.Logger.Warn("send alerts", zap.Error(err))
		}
	}
	found, err := fetchViolations(ctx, m.HTTPAddr())
	var counted map[string][2]int
	if err == nil {
		counted, err = fetchSLICounters(ctx, m.HTTPAddr())
	}
	if err == nil && o.Inspect != nil {
		err = o.Inspect(ctx, m.HTTPAddr())
	}
	stop()
	if rerr := <-done; rerr != nil {
		return nil, rerr
	}
	if err != nil {
		return nil, err
	}
	ruleNames := make([]string, len(rs.Rules))
	for i, r := range rs.Rules {
		ruleNames[i] = r.Name
	}
	res := &Result{
		Scenario: o.Scenario, Seed: o.Seed, Events: len(ds.Events),
		Rules: sim.Compare(ds.Truth, found, ruleNames), Traps: map[string]int{}, Elapsed: time.Since(start),
	}
	for _, t := range ds.Truth.Traps {
		res.Traps[t.Kind]++
	}
	res.Delays = delays(found, func(v violation.Violation) time.Duration { return v.Watermark.Sub(v.Deadline) })
	if o.Live {
		res.WallDelays = delays(found, func(v violation.Violation) time.Duration { return v.DetectedAt.Sub(v.Deadline) })
	}
	res.Open = openSummary(rs, found)
	res.Checks = map[string]Checks{}
	for _, r := range rs.Rules {
		c := Checks{Counted: counted[r.Name][0], Violations: counted[r.Name][1], Expected: ds.Truth.Checks[r.Name]}
		for _, v := range ds.Truth.Violations {
			if v.Rule == r.Name {
				c.ViolationsTruth++
			}
		}
		res.Checks[r.Name] = c
	}
	res.DeadLetters = m.Stats().DeadLetters
	res.DLQTopic = cfg.Kafka.Group + ".dlq"
	if len(poisoned) > 0 {
		res.Poisoned = map[string]int{}
		for _, p := range poisoned {
			res.Poisoned[p.Reason]++
		}
	}
	for s := range blind {
		res.Blind = append(res.Blind, s)
	}
	res.BlindAfter = m.BlindStreams()
	return res, nil
}

// openSummary sums each rule's open violations in the rule's unit.
func openSummary(rs *rules.RuleSet, found []violation.Violation) map[string]Open {
	out := map[string]Open{}
	customers := map[string]map[string]bool{}
	sums := map[string]float64{}
	for _, r := range rs.Rules {
		out[r.Name] = Open{}
		customers[r.Name] = map[string]bool{}
	}
	for _, v := range found {
		if v.State != violation.Open {
			continue
		}
		o := out[v.Rule]
		o.Violations++
		out[v.Rule] = o
		sums[v.Rule] += v.Impact
		if v.Customer != "" && customers[v.Rule] != nil {
			customers[v.Rule][v.Customer] = true
		}
	}
	for _, r := range rs.Rules {
		o, u := out[r.Name], r.Impact.Quantity()
		o.Customers = len(customers[r.Name])
		if u.Counted {
			o.Text = u.Text(float64(o.Violations))
		} else {
			total := u.Round(sums[r.Name])
			o.Impact, o.Unit, o.Text = &total, u.Name, u.Text(total)
		}
		out[r.Name] = o
	}
	return out
}

// topicLine is a stream's `topic:` line in a rule file.
var topicLine = regexp.MustCompile(`(?m)^(\s+)topic: (\S+)$`)

// WithFormat returns a rule file whose every stream reads format: the
// example rules as they read Avro or Protobuf topics.
func WithFormat(src []byte, format string) []byte {
	return topicLine.ReplaceAll(src, []byte("${1}topic: ${2}\n${1}format: "+format))
}

// registerSchemas registers the example schemas for o.Format in
// o.SchemaRegistry and returns the encoder of the events; nil for JSON.
func registerSchemas(ctx context.Context, o Options) (*schema.Encoder, *sr.Client, error) {
	if o.Format == "" || o.Format == rules.FormatJSON {
		return nil, nil, nil
	}
	if o.SchemaRegistry == "" {
		return nil, nil, fmt.Errorf("format %s needs a schema registry", o.Format)
	}
	cl, err := sr.NewClient(sr.URLs(o.SchemaRegistry))
	if err != nil {
		return nil, nil, err
	}
	enc, err := schema.RegisterSchemas(ctx, cl, o.Format, examplerules.Schemas(), o.TopicPrefix, sim.Topics...)
	if err != nil {
		return nil, nil, err
	}
	return enc, cl, nil
}

// EncodeEvents replaces each event's JSON value by its encoding with enc.
// Values that are not valid JSON (poison) are left as they are.
func EncodeEvents(enc *schema.Encoder, events []sim.Event) error {
	for i := range events {
		if !json.Valid(events[i].Value) {
			continue
		}
		b, err := enc.Encode(events[i].Topic, events[i].Value)
		if err != nil {
			return fmt.Errorf("encode event %d: %w", i, err)
		}
		events[i].Value = b
	}
	return nil
}
