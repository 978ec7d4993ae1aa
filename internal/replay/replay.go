// Package replay re-reads a past window of the business topics through the
// invariant rules, safely, and leaves evidence (internal/report) that the
// data is correct again, or exactly where it is not.
//
// Safety: a replay reads with its own Kafka client, assigning partitions
// directly, so it joins no consumer group and commits no offset; it keeps
// its state in its own Badger directory under the report directory, never the
// live monitor's; it produces nothing (records that cannot be evaluated are
// counted in the report, not sent to the dead-letter topic); and it pages only
// with --alert, only for findings still open, labelled as a replay's.
//
// Time: a replay's clock is event time. Each partition's clock is the newest
// event time read on it, and it is what the engine is given as "now", so a
// replay of last Tuesday judges deadlines as they were then and two replays
// of the same records agree to the nanosecond. Once every input is read, the
// clock moves past the window's end by the rules' horizon (their largest
// deadline) plus the lateness, and past the newest event by the idle time, so
// every deadline of a trigger inside the window is judged. See docs/replay.md.
//
// Progress is checkpointed: the engine's state changes, the offsets they
// reflect and the replay's own counters are written in one synced Badger
// commit, so a replay killed at any point resumes (--resume) where its last
// checkpoint left it and produces the same report as one never interrupted.
package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kzap"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/report"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/schema"
	"github.com/invmon/invmon/internal/violation"
)

// ErrInterrupted is returned when the context ends before the replay is
// done. Its progress is checkpointed; Resume continues it.
var ErrInterrupted = errors.New("replay interrupted; continue it with --resume")

// StateDirName is the replay's state directory inside the report directory:
// its plan and its Badger database.
const StateDirName = "replay-state"

// Options configure a replay.
type Options struct {
	// Config supplies the Kafka connection (brokers, TLS, SASL, client id),
	// the rule files and, for Alert, the Alertmanagers. Its state_dir is
	// never touched.
	Config config.Config
	// From and To bound the window: violations whose triggering event time
	// is in [From, To) are findings. Required unless Resume.
	From, To time.Time
	// Until, when set, stops reading at the first record with a timestamp
	// at or after it. Default: read to the end offsets when planned, so late
	// events and repairs after the window are seen.
	Until time.Time
	// LeadIn is how far before From inputs are read. Negative (the default
	// from the command line): the rules' largest lookback, unique window or
	// `for` (AutoLeadIn).
	LeadIn time.Duration
	// Rules names the rules to replay. Default all.
	Rules []string
	// Rate limits records applied per second over all partitions; 0 is
	// unlimited. Default 0.
	Rate float64
	// ReportDir receives report.json, report.md, report.html and the
	// replay's state (StateDirName). Required.
	ReportDir string
	// Resume continues the replay planned in ReportDir; From, To, Until,
	// LeadIn and Rules come from its plan.
	Resume bool
	// Alert pages, through the configured Alertmanagers, the rules with
	// findings still open at the end, annotated with the replay's run id.
	Alert bool
	// CheckpointInterval is how often progress is made durable. Default 2s.
	CheckpointInterval time.Duration
	// StallTimeout is how long a partition may wait for records short of its
	// planned end before it is reported as not covered. Default 30s.
	StallTimeout time.Duration
	// Progress receives progress output: bars when Terminal, otherwise a
	// plain line per partition every ProgressInterval. Default none.
	Progress io.Writer
	// Terminal selects bars over plain lines.
	Terminal bool
	// ProgressInterval is the period of plain progress lines. Default 5s.
	ProgressInterval time.Duration
	// LogSink, when set, is the writer the logger writes to; bars redirect it
	// above themselves so log lines do not tear them.
	LogSink *LogSink
	// Logger. Default no-op.
	Logger *zap.Logger
	// Now is the wall clock, used only for the run id, the planning time and
	// pacing; evaluation never reads it. Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 2 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 30 * time.Second
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Run plans (or, with Resume, continues) a replay, reads its window, and
// writes the report. It returns the report also when verdicts fail; an error
// means the replay could not finish, and ErrInterrupted that it can be
// resumed.
func Run(ctx context.Context, o Options) (*report.Report, error) {
	o = o.withDefaults()
	if o.ReportDir == "" {
		return nil, errors.New("replay: a report directory is required")
	}
	if len(o.Config.Kafka.Brokers) == 0 {
		return nil, errors.New("replay: kafka.brokers is required")
	}
	if o.Rate < 0 {
		return nil, fmt.Errorf("replay: rate %v must not be negative", o.Rate)
	}
	stateDir := filepath.Join(o.ReportDir, StateDirName)
	all, err := rules.LoadFiles(o.Config.RuleFiles...)
	if err != nil {
		return nil, err
	}
	var formats map[string]rules.ValueFormat
	if len(all.SchemaStreams()) > 0 {
		// Avro, Protobuf and JSON Schema topics decode with the registry's
		// schemas, cached beside the replay's own state.
		reg, err := schema.NewFromHTTPConfig(o.Config.SchemaRegistry.HTTP, o.Config.SchemaRegistry.URLs, nil, filepath.Join(stateDir, "schema-cache"))
		if err != nil {
			return nil, err
		}
		if reg == nil {
			return nil, fmt.Errorf("replay: stream %q reads format %s: configure schema_registry.urls", all.SchemaStreams()[0].Name, all.SchemaStreams()[0].Format)
		}
		defer reg.Close()
		formats = reg.Formats()
	}
	kopts, err := kafkaconn.Options(o.Config.Kafka)
	if err != nil {
		return nil, err
	}
	if err := kafkaconn.Check(ctx, o.Config.Kafka.Brokers, kopts); err != nil {
		return nil, err
	}
	clientID := o.Config.Kafka.ClientID
	if clientID == "" {
		clientID = "invmon"
	}
	base := append([]kgo.Opt{
		kgo.SeedBrokers(o.Config.Kafka.Brokers...),
		// A distinct client id tells broker logs and quotas that this is a
		// replay, not the live monitor.
		kgo.ClientID(clientID + "-replay"),
		kgo.WithLogger(kzap.New(o.Logger.Named("kafka"), kzap.Level(kgo.LogLevelWarn))),
	}, kopts...)
	admCl, err := kgo.NewClient(base...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)

	plan, rs, err := openPlan(ctx, o, adm, all, stateDir)
	if err != nil {
		return nil, err
	}
	if err := rs.BindFormats(formats); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	if err := plan.save(stateDir); err != nil {
		return nil, err
	}
	log := o.Logger.With(zap.String("replay", plan.RunID))
	log.Info("replay planned", zap.Time("from", plan.From), zap.Time("to", plan.To), zap.Time("read_from", plan.ReadFrom()),
		zap.Stringer("horizon", plan.Horizon), zap.Int("rules", len(plan.Rules)), zap.Int("partitions", len(plan.Partitions)),
		zap.Int("resumes", plan.Resumes))
	if plan.Until != nil && plan.Until.Before(plan.To.Add(time.Duration(plan.Horizon))) {
		log.Warn("--until is before the window's end plus the horizon: expected events after it are not seen, and their triggers are reported as violations",
			zap.Time("until", *plan.Until), zap.Time("needed", plan.To.Add(time.Duration(plan.Horizon))))
	}

	store, err := joinstate.Open(filepath.Join(stateDir, "badger"), joinstate.Options{}, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Warn("close replay state", zap.Error(err))
		}
	}()
	r, err := newRunner(o, log, plan, rs, store)
	if err != nil {
		return nil, err
	}
	if plan.Resumes > 0 {
		if err := r.recheckLogStarts(ctx, adm); err != nil {
			return nil, err
		}
	}
	if !plan.Complete {
		if err := r.read(ctx, base); err != nil {
			if cerr := r.checkpoint(); cerr != nil {
				log.Error("checkpoint after stop", zap.Error(cerr))
			}
			r.prog.close(false)
			if ctx.Err() != nil {
				log.Info("replay interrupted; progress is checkpointed", zap.Int64("records_this_run", r.readThisRun))
				return nil, ErrInterrupted
			}
			return nil, err
		}
	}
	r.prog.close(true)
	if err := r.finish(); err != nil {
		return nil, err
	}
	plan.Complete = true
	if err := plan.save(stateDir); err != nil {
		return nil, err
	}
	rep, err := r.build(ctx, adm)
	if err != nil {
		return nil, err
	}
	// The report is written before paging, so a page never points at a
	// report that does not exist yet, and a failed page loses no evidence.
	if err := report.Write(o.ReportDir, rep); err != nil {
		return nil, err
	}
	if o.Alert {
		alerted, err := page(ctx, o, r, rep)
		if err != nil {
			return rep, err
		}
		rep.Run.Alerted = alerted
		if err := report.Write(o.ReportDir, rep); err != nil {
			return nil, err
		}
	}
	log.Info("replay done", zap.String("verdict", rep.Verdict), zap.Int("findings", len(rep.Findings)),
		zap.Int64("records_this_run", rep.Run.RecordsThisRun), zap.Float64("records_per_second", rep.Run.RecordsPerSecond),
		zap.String("report", filepath.Join(o.ReportDir, report.HTMLFile)))
	return rep, nil
}

// openPlan returns the plan to execute and the rules it names: with Resume
// the one in stateDir, whose rules must not have changed; otherwise a new
// one, refusing a directory that already holds a replay.
func openPlan(ctx context.Context, o Options, adm *kadm.Client, all *rules.RuleSet, stateDir string) (*Plan, *rules.RuleSet, error) {
	existing, err := loadPlan(stateDir)
	switch {
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, nil, err
	case o.Resume && existing == nil:
		return nil, nil, fmt.Errorf("replay: --resume: no replay to resume in %s", o.ReportDir)
	case !o.Resume && existing != nil:
		return nil, nil, fmt.Errorf("replay: %s already holds replay %s (planned %s, complete: %v); resume it with --resume or choose another --report directory",
			o.ReportDir, existing.RunID, existing.PlannedAt.Format(time.RFC3339), existing.Complete)
	case o.Resume:
		names := make([]string, len(existing.Rules))
		for i, r := range existing.Rules {
			names[i] = r.Name
		}
		rs, err := Select(all, names)
		if err != nil {
			return nil, nil, fmt.Errorf("replay: resume %s: %w", existing.RunID, err)
		}
		if err := existing.checkRules(rs); err != nil {
			return nil, nil, fmt.Errorf("replay: resume %s: %w", existing.RunID, err)
		}
		existing.Resumes++
		return existing, rs, nil
	}
	if o.From.IsZero() || o.To.IsZero() || !o.From.Before(o.To) {
		return nil, nil, fmt.Errorf("replay: the window needs --from before --to (got %s to %s)", o.From.Format(time.RFC3339), o.To.Format(time.RFC3339))
	}
	rs, err := Select(all, o.Rules)
	if err != nil {
		return nil, nil, fmt.Errorf("replay: %w", err)
	}
	leadIn := o.LeadIn
	if leadIn < 0 {
		leadIn = AutoLeadIn(rs)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("replay: state dir: %w", err)
	}
	plan, err := makePlan(ctx, adm, planSpec{rs: rs, from: o.From, to: o.To, until: o.Until, leadIn: leadIn, now: o.Now()})
	if err != nil {
		return nil, nil, fmt.Errorf("replay: plan: %w", err)
	}
	return plan, rs, nil
}

// runner is one execution of a replay plan.
type runner struct {
	o       Options
	log     *zap.Logger
	plan    *Plan
	rs      *rules.RuleSet
	store   *joinstate.Store
	metrics *engine.Metrics
	parts   []*part
	tps     []*tpState
	byTP    map[string]map[int32]*tpState
	// clockStreams are the streams per topic whose event time drives the
	// clock; triggers the rule sides per topic whose entities are counted.
	clockStreams map[string][]*rules.Stream
	triggers     map[string][]trigger
	limiter      *rate.Limiter
	prog         progressView

	lastCheckpoint time.Time
	// The read phase of this execution, for the measured rate.
	readStart, readEnd time.Time
	readThisRun        int64
	// open holds the findings still open, once built, for --alert.
	open []violation.Violation
}

type trigger struct {
	rule string
	side *rules.Side
}

// part is one partition number of every topic: one engine, fed the records
// of its topic-partitions merged in a fixed order.
type part struct {
	id    int32
	eng   *engine.Partition
	tps   []*tpState
	dec   rules.Decoder
	clock time.Time
	// applied is the last offset per topic applied since the last checkpoint.
	applied map[string]int64
	book    book
}

// tpState is one topic-partition being read.
type tpState struct {
	plan  PlanTP
	label string
	// next is the next offset to apply; read counts records applied.
	next int64
	read int64
	// failed, when set, is why the partition is not covered; it is read no
	// further.
	failed string
	// buf holds fetched records not yet applied, in offset order; fetched is
	// the offset after the last one buffered.
	buf        []*kgo.Record
	fetched    int64
	fetchedAll bool
	paused     bool
	// emptySince is when the buffer last ran dry while records were still
	// due, for the stall timeout; lastErr the last retriable fetch error.
	emptySince time.Time
	lastErr    error
}

func (s *tpState) done() bool { return s.failed != "" || s.next >= s.plan.End }

func (s *tpState) fail(problem string) {
	if s.failed == "" {
		s.failed = problem
	}
	s.buf = nil
}

func newRunner(o Options, log *zap.Logger, plan *Plan, rs *rules.RuleSet, store *joinstate.Store) (*runner, error) {
	r := &runner{
		o: o, log: log, plan: plan, rs: rs, store: store,
		metrics:      engine.NewMetrics(nil),
		byTP:         map[string]map[int32]*tpState{},
		clockStreams: map[string][]*rules.Stream{},
		triggers:     map[string][]trigger{},
	}
	if o.Rate > 0 {
		// A burst of a fiftieth of a second absorbs timer jitter without
		// letting the rate overshoot measurably.
		r.limiter = rate.NewLimiter(rate.Limit(o.Rate), max(1, int(o.Rate/50)))
	}
	for _, s := range rs.Streams {
		r.clockStreams[s.Topic] = append(r.clockStreams[s.Topic], s)
	}
	for _, rule := range rs.Rules {
		if side := TriggerSide(rule); side != nil {
			r.triggers[side.Stream.Topic] = append(r.triggers[side.Stream.Topic], trigger{rule: rule.Name, side: side})
		}
	}
	ids := map[int32]*part{}
	for _, tp := range plan.Partitions {
		s := &tpState{plan: tp, label: tp.Topic + "[" + strconv.Itoa(int(tp.Partition)) + "]", next: tp.Start, failed: tp.Problem}
		r.tps = append(r.tps, s)
		if tp.Partition < 0 {
			continue // a missing topic: reported, nothing to read
		}
		if r.byTP[tp.Topic] == nil {
			r.byTP[tp.Topic] = map[int32]*tpState{}
		}
		r.byTP[tp.Topic][tp.Partition] = s
		p := ids[tp.Partition]
		if p == nil {
			p = &part{id: tp.Partition, applied: map[string]int64{}, dec: rules.NewDecoder(r.rs)}
			ids[tp.Partition] = p
			r.parts = append(r.parts, p)
		}
		p.tps = append(p.tps, s)
	}
	for _, p := range r.parts {
		if err := p.book.load(store.Snapshot(p.id)); err != nil {
			return nil, fmt.Errorf("replay: load progress of partition %d: %w", p.id, err)
		}
		p.clock = p.book.clock
		if p.clock.IsZero() {
			p.clock = plan.ReadFrom()
		}
		eng, err := engine.NewPartition(p.id, rs, store.Snapshot(p.id), r.metrics, log, p.clock)
		if err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
		// Start a new delta generation at once. The engine treats an item of
		// the current generation as never written, so removing it writes no
		// delete; items loaded from the snapshot carry generation 0, the same
		// as a fresh engine's, and without this a trigger restored from a
		// checkpoint and satisfied before the next one would stay in the
		// state and fire again after another resume. A load writes nothing
		// today; should it ever, the writes are kept, not dropped.
		if d := eng.TakeDelta(); !d.Empty() {
			if err := store.Commit(joinstate.PartitionDelta{Partition: p.id, Delta: d}); err != nil {
				return nil, fmt.Errorf("replay: partition %d: %w", p.id, err)
			}
		}
		p.eng = eng
		for _, s := range p.tps {
			off, err := store.AppliedOffset(s.plan.Topic, p.id)
			if err != nil {
				return nil, fmt.Errorf("replay: applied offset %s: %w", s.label, err)
			}
			if off >= 0 && off+1 > s.next {
				s.next = off + 1
			}
			s.read = p.book.read[s.plan.Topic]
			if f := p.book.failed[s.plan.Topic]; f != "" {
				s.failed = f
			}
		}
	}
	r.prog = newProgress(o, plan.RunID, r.tps)
	return r, nil
}

// recheckLogStarts fails partitions whose next record was deleted while the
// replay was stopped: reading on from the new log start would skip records
// silently.
func (r *runner) recheckLogStarts(ctx context.Context, adm *kadm.Client) error {
	topics := map[string]bool{}
	for _, s := range r.tps {
		if !s.done() {
			topics[s.plan.Topic] = true
		}
	}
	if len(topics) == 0 {
		return nil
	}
	starts, err := adm.ListStartOffsets(ctx, sortedSet(topics)...)
	if err != nil && !isShardErr(err) {
		return fmt.Errorf("replay: list start offsets: %w", err)
	}
	for _, s := range r.tps {
		if s.done() {
			continue
		}
		if o, ok := starts.Lookup(s.plan.Topic, s.plan.Partition); ok && o.Err == nil && o.Offset > s.next {
			s.fail(fmt.Sprintf("records %d to %d were deleted while the replay was stopped", s.next, o.Offset-1))
		}
	}
	return nil
}

// checkpoint makes the progress durable: every engine's state changes, the
// offsets they reflect and the replay's counters, in one synced commit.
func (r *runner) checkpoint() error {
	deltas := make([]joinstate.PartitionDelta, 0, len(r.parts))
	for _, p := range r.parts {
		d := p.eng.TakeDelta()
		p.book.clock = p.clock
		for _, s := range p.tps {
			p.book.read[s.plan.Topic] = s.read
			if s.failed != "" {
				p.book.failed[s.plan.Topic] = s.failed
			}
		}
		p.book.write(d)
		deltas = append(deltas, joinstate.PartitionDelta{Partition: p.id, Delta: d, Offsets: p.applied})
	}
	if err := r.store.Commit(deltas...); err != nil {
		return fmt.Errorf("replay: checkpoint: %w", err)
	}
	for _, p := range r.parts {
		p.applied = map[string]int64{}
		p.book.committed()
	}
	r.lastCheckpoint = r.o.Now()
	return nil
}

// finish judges what the records read leave to judge: every input that was
// read completely is marked caught up, and the clock moves to
// max(To + horizon + lateness, newest event time + idle_after), so idle
// inputs let each rule's watermark pass every deadline of a trigger in the
// window. An input that was not fully read holds its rules' watermarks where
// its data ends: the replay never judges absence it could not see. Running it
// again (a resumed, finished replay) changes nothing.
func (r *runner) finish() error {
	final := r.finalClock()
	for _, p := range r.parts {
		covered := map[string]bool{}
		for _, s := range p.tps {
			covered[s.plan.Topic] = s.failed == "" && s.next >= s.plan.End
		}
		for topic := range r.clockStreams {
			ok, known := covered[topic]
			// A topic without this partition number has nothing to wait for.
			p.eng.SetCaughtUp(topic, ok || !known)
		}
		p.eng.Advance(final)
	}
	return r.checkpoint()
}

// finalClock is the event-time clock the replay ends at (see finish).
func (r *runner) finalClock() time.Time {
	var newest time.Time
	for _, p := range r.parts {
		if p.clock.After(newest) {
			newest = p.clock
		}
	}
	lateness, idle := streamTiming(r.rs)
	final := r.plan.To.Add(time.Duration(r.plan.Horizon) + lateness)
	if t := newest.Add(idle); t.After(final) {
		final = t
	}
	return final.UTC()
}
