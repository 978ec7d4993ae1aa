// Package consumer runs the monitor as a long-lived Kafka consumer group:
// it polls the rules' topics, hands each partition's records to its engine,
// routes poison records to a dead-letter topic, and commits offsets to Kafka
// only after the state they produced is durable in Badger.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kzap"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/violation"
)

// Config configures the consumer.
type Config struct {
	// Brokers are the seed brokers. Required.
	Brokers []string
	// Group is the consumer group id. Default "invmon".
	Group string
	// ClientID names the client to the brokers. Default "invmon".
	ClientID string
	// DLQTopic receives records that cannot be decoded or evaluated.
	// Default "<group>.dlq".
	DLQTopic string
	// InstanceID enables static group membership when set. Default none.
	InstanceID string
	// Feed writes every violation change to "<group>.violations-state" so
	// that every member pages with the whole group's violations (see
	// FollowFeed). Default off; monitor enables it with the changelog.
	Feed bool
	// Changelog appends every state write to "<group>.changelog" so a member
	// that gains a partition restores its state from there. Default off;
	// monitor enables it unless configured otherwise.
	Changelog bool
	// MaxPollRecords bounds one batch: the unit of state writes and commits.
	// Larger batches amortize the synced Badger commit. Default 50000.
	MaxPollRecords int
	// TickInterval is how often the watermarks are advanced when no records
	// arrive, so absence is detected on a silent stream. Default 1s.
	TickInterval time.Duration
	// ProduceTimeout bounds how long a batch waits for the brokers to
	// acknowledge its dead letters, changelog and feed records; past it the
	// batch fails and Run returns the error, committing nothing after the
	// last durable batch. Default 2m, as Kafka's delivery.timeout.ms: a broker
	// restart is ridden out.
	ProduceTimeout time.Duration
	// TimeBounds are the event times the engines accept; a record outside
	// them is a dead letter with reason bad_time. Default
	// engine.DefaultTimeBounds.
	TimeBounds engine.TimeBounds
	// ViolationRetention is how long resolved violations are kept (their
	// ids as long again). Default engine.DefaultViolationRetention.
	ViolationRetention time.Duration
	// Opts are extra franz-go options such as TLS and SASL.
	Opts []kgo.Opt
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Registerer receives the consumer's and the Kafka client's metrics; nil
	// registers nothing.
	Registerer prometheus.Registerer
	// OnCommit is called, after each durable commit, with the violations that
	// opened or resolved in it. Optional.
	OnCommit func([]violation.Violation)
	// OnBlind is called after every batch and tick with the streams that lag
	// another input of their rules beyond their max_lag, and by how much
	// (the maximum over this member's partitions). Optional.
	OnBlind func(map[string]time.Duration)
}

func (c Config) withDefaults() Config {
	if c.Group == "" {
		c.Group = "invmon"
	}
	if c.ClientID == "" {
		c.ClientID = "invmon"
	}
	if c.DLQTopic == "" {
		c.DLQTopic = c.Group + ".dlq"
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 50000
	}
	if c.TickInterval == 0 {
		c.TickInterval = time.Second
	}
	if c.ProduceTimeout == 0 {
		c.ProduceTimeout = 2 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Consumer is the monitor's group consumer.
type Consumer struct {
	cfg     Config
	rs      *rules.RuleSet
	store   *joinstate.Store
	log     *zap.Logger
	cl      *kgo.Client
	adm     *kadm.Client
	topics  []string
	metrics *engine.Metrics
	lag     *prometheus.GaugeVec
	dlqOut  *prometheus.CounterVec
	// skipped counts records read again at or below the applied offset.
	skipped *prometheus.CounterVec
	// schemaRetries counts records held back because their schema could not
	// be fetched; waitingParts is how many topic-partitions wait now.
	schemaRetries *prometheus.CounterVec
	waitingParts  prometheus.Gauge

	// mu guards the partitions; the poll loop holds it while processing and
	// the rebalance callbacks while changing the assignment.
	mu       sync.Mutex
	assigned map[string]map[int32]bool
	parts    map[int32]*partition
	ends     map[string]map[int32]int64
	starts   map[string]map[int32]int64
	endsAt   time.Time

	restoring prometheus.Gauge
	restored  prometheus.Counter
	owned     prometheus.Gauge

	// commitq feeds the committer goroutine; commits counts batches not yet
	// durable; commitErr holds the first failure.
	commitq   chan *batch
	commits   sync.WaitGroup
	commitErr atomic.Pointer[error]

	ready    atomic.Bool
	inflight atomic.Int64

	// durable holds the offsets of the last batch made durable: the only
	// offsets ever committed, also on revoke and close.
	durableMu sync.Mutex
	durable   map[string]map[int32]kgo.EpochOffset

	// produceSince is when the current bounded produce began (unix nanos),
	// 0 when none is waiting.
	produceSince    atomic.Int64
	produceFailures prometheus.Counter
	// dlqLimit is the largest dead letter the dead-letter topic accepts.
	dlqLimit int
	// beforeProduce and beforeStateCommit, when set, run before each batch's
	// produce and state commit (the latter failing it with its error): the
	// fault-injection points of the tests.
	beforeProduce     func([]*kgo.Record)
	beforeStateCommit func() error
	// applyRecord, when set, replaces Partition.Apply, so a test can make
	// one record fail as a panic half-way through would.
	applyRecord func(*engine.Partition, *engine.Record, time.Time) error

	topicsCheckedAt time.Time
	records         atomic.Int64
	dlqCount        atomic.Int64
}

// partition is one partition number of every input topic, owned by this
// member together (the topics are co-partitioned).
type partition struct {
	id  int32
	eng *engine.Partition
	// applied is the last offset per topic whose effects are durable.
	applied map[string]int64
	// next is the next offset to read per topic, once known.
	next map[string]int64
	// batch is the last offset per topic applied in the current batch.
	batch map[string]int64
	dlq   []*kgo.Record
	// waiting holds, per topic, the record this partition waits to apply
	// because its schema could not be fetched (see waitForSchema).
	waiting map[string]*schemaWait
}

// schemaWait is a topic-partition held at a record whose schema the
// registry could not serve: fetching is paused, and from retryAt the record
// is read and applied again. Nothing after it is applied or committed
// meanwhile, so a registry outage neither skips nor dead-letters a record.
type schemaWait struct {
	offset  int64
	err     error
	retryAt time.Time
	backoff *backoff.ExponentialBackOff
	// held is set once fetching is paused and rewound to offset; due once
	// it is resumed after the back-off.
	held, due bool
}

// New connects to the cluster, checks that the rules' topics are
// co-partitioned, creates the dead-letter topic when missing, and joins the
// group lazily on Run.
func New(ctx context.Context, cfg Config, rs *rules.RuleSet, store *joinstate.Store, metrics *engine.Metrics, log *zap.Logger) (*Consumer, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("no Kafka brokers configured")
	}
	if log == nil {
		log = zap.NewNop()
	}
	if metrics == nil {
		metrics = engine.NewMetrics(nil)
	}
	c := &Consumer{
		cfg: cfg, rs: rs, store: store, log: log, metrics: metrics,
		topics:   topicsOf(rs),
		assigned: map[string]map[int32]bool{},
		parts:    map[int32]*partition{},
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invmon_consumer_lag_records", Help: "Records between the monitor's position and the high-water mark, per topic and partition.",
		}, []string{"topic", "partition"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_records_skipped_total", Help: "Records read again at or below the partition's applied offset and skipped: their effects are already in the state (a group whose offsets were lost or lag its state).",
		}, []string{"topic"}),
		restoring: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "invmon_restoring_partitions", Help: "Partitions being restored from the changelog; the monitor is not ready meanwhile.",
		}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "invmon_restored_records_total", Help: "Changelog records read to restore partitions.",
		}),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "invmon_owned_partitions", Help: "Partition numbers this member owns and evaluates.",
		}),
		dlqOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_dead_letters_total", Help: "Records sent to the dead-letter topic, per source topic and reason.",
		}, []string{"topic", "reason"}),
		produceFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "invmon_state_produce_failures_total", Help: "Batches whose dead letters, changelog or feed records were not acknowledged in time; each stops the member without committing.",
		}),
		schemaRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_schema_registry_retries_total", Help: "Records held back, to be read again, because the Schema Registry could not serve their schema; per topic.",
		}, []string{"topic"}),
		waitingParts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "invmon_schema_waiting_partitions", Help: "Topic-partitions held at a record whose schema the Schema Registry could not serve.",
		}),
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(c.topics...),
		// Range assignment gives one member the same partition number of
		// every topic when partition counts are equal: the co-partitioning
		// that lets a payment and its ledger entry meet in one worker.
		kgo.Balancers(kgo.RangeBalancer()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Changelog records go to the partition of the state they log, and the
		// dead-letter topic has one partition: every record names its own.
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.WithLogger(kzap.New(log.Named("kafka"), kzap.Level(kgo.LogLevelWarn))),
		kgo.OnPartitionsAssigned(c.onAssigned),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(c.lag, c.dlqOut, c.skipped, c.restoring, c.restored, c.owned, c.produceFailures, c.schemaRetries, c.waitingParts,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "invmon_state_produce_waiting_seconds", Help: "How long the current batch has waited for the brokers to acknowledge its dead letters, changelog and feed records; 0 when none waits.",
			}, c.produceWaiting))
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("invmon_kafka", kprom.Registerer(cfg.Registerer))))
	}
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	opts = append(opts, cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	c.cl = cl
	c.adm = kadm.NewClient(cl)
	if err := c.checkTopics(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	// One batch may wait while another is being made durable: enough to
	// overlap evaluation with the commit, and a bound on memory.
	c.commitq = make(chan *batch, 1)
	go c.committer()
	return c, nil
}

func topicsOf(rs *rules.RuleSet) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range rs.Streams {
		if !seen[s.Topic] {
			seen[s.Topic] = true
			out = append(out, s.Topic)
		}
	}
	sort.Strings(out)
	return out
}

// checkTopics refuses to start when one rule's topics have different
// partition counts: their events would never meet in one partition.
func (c *Consumer) checkTopics(ctx context.Context) error {
	details, err := c.adm.ListTopics(ctx, append([]string{c.cfg.DLQTopic}, c.topics...)...)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	if err := CheckCoPartitioned(c.rs, details); err != nil {
		return err
	}
	for _, t := range c.topics {
		if d, ok := details[t]; !ok || d.Err != nil {
			c.log.Warn("input topic does not exist yet; consuming it once it does", zap.String("topic", t))
		}
	}
	if c.cfg.Changelog {
		if err := c.ensureChangelog(ctx, details); err != nil {
			return err
		}
	}
	if c.cfg.Feed {
		if err := c.ensureFeed(ctx); err != nil {
			return err
		}
	}
	if d, ok := details[c.cfg.DLQTopic]; !ok || d.Err != nil {
		if _, err := kafkaconn.EnsureTopic(ctx, c.adm, c.cfg.DLQTopic, 1, nil); err != nil {
			return fmt.Errorf("dead-letter topic: %w", err)
		}
	}
	c.dlqLimit = c.deadLetterLimit(ctx)
	return nil
}

// Close leaves the group and closes the client. Call it after Run returns.
func (c *Consumer) Close() {
	if err := c.flush(); err != nil {
		c.log.Error("last batch not committed", zap.Error(err))
	}
	c.cl.CloseAllowingRebalance()
	close(c.commitq)
}

// Ready reports whether the consumer has joined the group and loaded the
// state of its partitions, and is not failed or stalled making a batch
// durable.
func (c *Consumer) Ready() bool {
	return c.ready.Load() && c.commitErr.Load() == nil && !c.produceStalled()
}

// Stats is a snapshot of the consumer's progress.
type Stats struct {
	// Records counts input records handled (applied or dead-lettered).
	Records int64
	// DeadLetters counts records sent to the dead-letter topic.
	DeadLetters int64
	// Pending counts expectations waiting for their deadline.
	Pending int
	// LiveEntries counts the state entries the rules keep: pending
	// expectations, buffered events, unique keys, transition and state
	// entries.
	LiveEntries int64
	// CaughtUp is true when every assigned input partition has reached its
	// high-water mark.
	CaughtUp bool
	// Partitions is how many partition numbers this member owns.
	Partitions int
	// MinWatermark is the lowest rule watermark on any owned partition: every
	// deadline before it has been judged.
	MinWatermark time.Time
	// Durable is true when every batch evaluated so far is committed: what
	// the API shows then includes everything handled.
	Durable bool
	// SchemaWaiting counts topic-partitions held at a record whose schema
	// the Schema Registry could not serve yet.
	SchemaWaiting int
}

// Stats returns the consumer's progress.
func (c *Consumer) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Records: c.records.Load(), DeadLetters: c.dlqCount.Load(), CaughtUp: true, Partitions: len(c.parts), Durable: c.inflight.Load() == 0}
	first := true
	for _, p := range c.parts {
		s.SchemaWaiting += len(p.waiting)
		if wm := p.eng.MinWatermark(); first || wm.Before(s.MinWatermark) {
			s.MinWatermark, first = wm, false
		}
		s.Pending += p.eng.PendingCount()
		s.LiveEntries += p.eng.Live()
		for _, t := range c.topics {
			if !c.caughtUp(p, t) {
				s.CaughtUp = false
			}
		}
	}
	return s
}

func (c *Consumer) onAssigned(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range tps {
		if c.assigned[t] == nil {
			c.assigned[t] = map[int32]bool{}
		}
		for _, p := range ps {
			c.assigned[t][p] = true
		}
	}
	c.log.Info("partitions assigned", zap.Any("partitions", tps))
}

// onRevoked commits and drops the revoked partitions' engines. Every batch's
// state is durable before the poll loop allows a rebalance. franz-go calls it
// on Close too.
func (c *Consumer) onRevoked(ctx context.Context, cl *kgo.Client, tps map[string][]int32) {
	// Everything evaluated must be durable (and in the changelog) before the
	// next owner restores it; then a blocking commit, so it starts after it.
	// Only offsets of durable batches are committed: what was polled but
	// not made durable (a failed batch, an error before it was queued) must
	// be read again by whoever owns the partition next.
	if err := c.flush(); err != nil {
		c.log.Error("batch not durable; committing no offset past the last durable batch", zap.Error(err))
	} else if offs := c.durableOffsets(); len(offs) > 0 {
		cl.CommitOffsetsSync(ctx, offs, c.onCommitted)
	}
	c.drop(tps)
	c.log.Info("partitions revoked", zap.Any("partitions", tps))
}

// onLost drops the partitions without committing: another member may
// already own them.
func (c *Consumer) onLost(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	c.drop(tps)
	c.log.Warn("partitions lost", zap.Any("partitions", tps))
}

func (c *Consumer) drop(tps map[string][]int32) {
	c.forgetDurable(tps)
	c.mu.Lock()
	defer c.mu.Unlock()
	resume := map[string][]int32{}
	for t, ps := range tps {
		for _, p := range ps {
			delete(c.assigned[t], p)
			if part := c.parts[p]; part != nil && part.waiting[t] != nil {
				// Paused fetching outlives the assignment: undo it, so the
				// partition is read when it comes back.
				resume[t] = append(resume[t], p)
			}
			// The engine holds state read from Badger; when the partition comes
			// back it must be reloaded, since another member may have moved it on.
			delete(c.parts, p)
		}
	}
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
	c.countWaiting()
}

// Run polls and processes until ctx is done, then finishes the batch in hand
// and returns. Call Close afterwards to leave the group.
func (c *Consumer) Run(ctx context.Context) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, c.cfg.TickInterval)
		fetches := c.cl.PollRecords(pctx, c.cfg.MaxPollRecords)
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			// The client retries retriable errors itself; what reaches here is
			// worth an operator's eye but not worth stopping for.
			c.log.Warn("fetch error", zap.String("topic", fe.Topic), zap.Int32("partition", fe.Partition), zap.Error(fe.Err))
		}
		err := c.process(fetches)
		if err == nil {
			if e := c.commitErr.Load(); e != nil {
				err = *e
			}
		}
		c.cl.AllowRebalance()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return c.flush()
		}
	}
}

func (c *Consumer) process(fetches kgo.Fetches) error {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.loadAssigned(now); err != nil {
		return err
	}
	c.resumeDue(now)
	work := map[*partition][]kgo.FetchTopicPartition{}
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 {
			return
		}
		p := c.parts[ftp.Partition]
		if p == nil || !c.assigned[ftp.Topic][ftp.Partition] {
			return // revoked since the fetch: the next owner reads it
		}
		work[p] = append(work[p], ftp)
	})
	var wg sync.WaitGroup
	errs := make(chan error, len(work))
	for p, ftps := range work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.apply(p, ftps, now); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// Before the offsets to commit are taken below: a partition held at a
	// record is rewound to it, so its commit never passes it.
	c.holdWaiting(now)
	c.refreshOffsets(now)
	c.owned.Set(float64(len(c.parts)))
	if err := c.recheckTopics(now); err != nil {
		return err
	}
	deltas := make([]joinstate.PartitionDelta, 0, len(c.parts))
	var dlq, changelog []*kgo.Record
	for _, p := range c.parts {
		for _, t := range c.topics {
			p.eng.SetCaughtUp(t, c.caughtUp(p, t))
		}
		p.eng.Advance(now)
		// A failed state read leaves the batch unjudged: nothing of it may
		// become durable, so the consumer stops and the records are re-read.
		if err := p.eng.Err(); err != nil {
			return fmt.Errorf("partition %d: %w", p.id, err)
		}
		d := p.eng.TakeDelta()
		if d.Empty() && len(p.batch) == 0 {
			continue
		}
		deltas = append(deltas, joinstate.PartitionDelta{Partition: p.id, Delta: d, Offsets: p.batch})
		dlq = append(dlq, p.dlq...)
		if c.cfg.Changelog {
			changelog = append(changelog, c.changelogRecords(p.id, d, p.batch)...)
		}
	}
	if c.cfg.OnBlind != nil {
		var blind map[string]time.Duration
		for _, p := range c.parts {
			for s, lag := range p.eng.Blind() {
				if blind == nil {
					blind = map[string]time.Duration{}
				}
				blind[s] = max(blind[s], lag)
			}
		}
		c.cfg.OnBlind(blind)
	}
	if len(deltas) == 0 {
		if len(c.parts) > 0 || len(c.assigned) > 0 {
			c.ready.Store(true)
		}
		return nil
	}
	for _, pd := range deltas {
		p := c.parts[pd.Partition]
		for t, off := range p.batch {
			p.applied[t] = off
		}
		p.batch = map[string]int64{}
		p.dlq = nil
	}
	// The batch is durable in the background while the next one is
	// evaluated: the two cores then work on both. Batches are made durable
	// one at a time, in order; the offsets to commit are taken now, before
	// the next poll moves them.
	c.commits.Add(1)
	c.inflight.Add(1)
	c.commitq <- &batch{deltas: deltas, dlq: dlq, changelog: changelog, offsets: c.cl.UncommittedOffsets()}
	return nil
}

// batch is one poll's work on its way to durability.
type batch struct {
	deltas         []joinstate.PartitionDelta
	dlq, changelog []*kgo.Record
	offsets        map[string]map[int32]kgo.EpochOffset
}

// committer makes batches durable, in order: dead letters and changelog,
// then the synced Badger commit, then the asynchronous Kafka commit and the
// violations for alerting. A failure stops the consumer: the next poll
// returns it, and nothing after the failed batch is committed.
func (c *Consumer) committer() {
	for b := range c.commitq {
		if c.commitErr.Load() == nil {
			if err := c.commit(b); err != nil {
				c.commitErr.Store(&err)
			}
		}
		c.inflight.Add(-1)
		c.commits.Done()
	}
}

func (c *Consumer) commit(b *batch) error {
	// Dead letters and the changelog first: once the local state says a
	// record is applied it is never read again, so its dead letter must be
	// safe before that, and the changelog must hold at least what the local
	// state holds.
	out := append(b.dlq, b.changelog...)
	if c.cfg.Feed {
		var changed []violation.Violation
		for _, pd := range b.deltas {
			changed = append(changed, pd.Delta.Changed...)
		}
		feed, err := c.feedRecords(changed)
		if err != nil {
			return err
		}
		out = append(out, feed...)
	}
	if len(out) > 0 {
		if c.beforeProduce != nil {
			c.beforeProduce(out)
		}
		results, err := c.produceBounded(out)
		if err != nil {
			return fmt.Errorf("produce dead letters and changelog: %w", err)
		}
		ends := map[int32]int64{}
		for _, r := range results {
			if r.Record.Topic == c.changelogTopic() {
				ends[r.Record.Partition] = max(ends[r.Record.Partition], r.Record.Offset+1)
			}
		}
		for i := range b.deltas {
			b.deltas[i].ChangelogEnd = ends[b.deltas[i].Partition]
		}
	}
	if c.beforeStateCommit != nil {
		if err := c.beforeStateCommit(); err != nil {
			return err
		}
	}
	if err := c.store.Commit(b.deltas...); err != nil {
		return err
	}
	// The Kafka commit is asynchronous: the state already records what is
	// applied, and records at or below that are skipped on re-read, so a
	// commit that lags or fails costs a re-read, never correctness. Waiting
	// for it would stall the next batch by a broker round trip.
	c.setDurable(b.offsets)
	c.cl.CommitOffsets(context.Background(), b.offsets, c.onCommitted)
	c.ready.Store(true)
	var changed []violation.Violation
	for _, pd := range b.deltas {
		changed = append(changed, pd.Delta.Changed...)
	}
	if c.cfg.OnCommit != nil && len(changed) > 0 {
		c.cfg.OnCommit(changed)
	}
	return nil
}

// flush waits until every batch handed to the committer is durable, and
// returns the committer's error, if any.
func (c *Consumer) flush() error {
	c.commits.Wait()
	if err := c.commitErr.Load(); err != nil {
		return *err
	}
	return nil
}

// loadAssigned creates an engine, from durable state, for every newly
// assigned partition number, so that deadlines restored from state fire even
// if the partition never receives another record.
func (c *Consumer) loadAssigned(now time.Time) error {
	for _, ps := range c.assigned {
		for id := range ps {
			if c.parts[id] != nil {
				continue
			}
			if c.cfg.Changelog {
				c.ready.Store(false)
				if err := c.restore(context.Background(), id); err != nil {
					return fmt.Errorf("restore partition %d: %w", id, err)
				}
			}
			eng, err := c.newEngine(id, now)
			if err != nil {
				return err
			}
			p := &partition{id: id, eng: eng, applied: map[string]int64{}, next: map[string]int64{}, batch: map[string]int64{}}
			for _, t := range c.topics {
				off, err := c.store.AppliedOffset(t, id)
				if err != nil {
					return fmt.Errorf("applied offset %s[%d]: %w", t, id, err)
				}
				p.applied[t] = off
			}
			c.parts[id] = p
			c.endsAt = time.Time{} // learn the new partitions' ends now
		}
	}
	return nil
}

// newEngine loads partition id's engine from its durable state.
func (c *Consumer) newEngine(id int32, now time.Time) (*engine.Partition, error) {
	eng, err := engine.NewPartition(id, c.rs, c.store.Snapshot(id), c.metrics, c.log, now)
	if err != nil {
		return nil, err
	}
	eng.SetTimeBounds(c.cfg.TimeBounds)
	eng.SetViolationRetention(c.cfg.ViolationRetention)
	return eng, nil
}

// apply hands one poll's records of a partition to its engine. A record
// whose evaluation panicked half-way leaves the engine's state half-changed:
// the engine is then rebuilt from durable state, the poll's records are
// applied again without that one, and it becomes a dead letter (reason
// panic). So a panic neither crashes the member (and crash-loops it on the
// same record) nor commits past a record whose effects were lost.
func (c *Consumer) apply(p *partition, ftps []kgo.FetchTopicPartition, now time.Time) error {
	poisoned := map[*kgo.Record]*engine.PanicError{}
	for {
		bad, pe := c.applyOnce(p, ftps, now, poisoned)
		if bad == nil {
			return nil
		}
		poisoned[bad] = pe
		c.log.Error("evaluating a record panicked; rebuilding the partition without it and dead-lettering it",
			zap.String("topic", bad.Topic), zap.Int32("partition", bad.Partition), zap.Int64("offset", bad.Offset),
			zap.Any("panic", pe.Value), zap.ByteString("stack", pe.Stack))
		// The engine's durable state is what every batch before this one
		// wrote: wait until all of them are written, then reload it.
		if err := c.flush(); err != nil {
			return err
		}
		eng, err := c.newEngine(p.id, now)
		if err != nil {
			return fmt.Errorf("rebuild partition %d after a panic: %w", p.id, err)
		}
		p.eng, p.batch, p.dlq = eng, map[string]int64{}, nil
	}
}

// applyOnce applies the records, dead-lettering the poisoned ones. It stops
// at the first record that panics while changing state and returns it.
func (c *Consumer) applyOnce(p *partition, ftps []kgo.FetchTopicPartition, now time.Time, poisoned map[*kgo.Record]*engine.PanicError) (*kgo.Record, *engine.PanicError) {
	var rec engine.Record
	var handled int64
	var skipped map[string]int // allocated only when a record is read again
	for _, ftp := range ftps {
		applied := p.applied[ftp.Topic]
		if w := p.waiting[ftp.Topic]; w != nil && !w.due {
			continue // fetched before the pause: read again from w.offset
		}
	records:
		for _, r := range ftp.Records {
			if r.Offset <= applied {
				p.next[ftp.Topic] = r.Offset + 1
				handled++
				if skipped == nil {
					skipped = map[string]int{}
				}
				skipped[ftp.Topic]++
				continue // its effects are already in the state
			}
			if pe, ok := poisoned[r]; ok {
				p.next[ftp.Topic] = r.Offset + 1
				handled++
				p.dlq = append(p.dlq, c.deadLetter(r, &engine.DecodeError{Reason: engine.ReasonPanic, Err: pe}))
				p.batch[ftp.Topic] = r.Offset
				continue
			}
			rec = engine.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
			apply := (*engine.Partition).Apply
			if c.applyRecord != nil {
				apply = c.applyRecord
			}
			err := apply(p.eng, &rec, now)
			if errors.Is(err, rules.ErrSchemaUnavailable) {
				// Hold the topic-partition here: nothing after this record
				// is applied before it, and holdWaiting rewinds to it.
				p.wait(ftp.Topic, r.Offset, err, now)
				c.schemaRetries.WithLabelValues(ftp.Topic).Inc()
				break records
			}
			p.next[ftp.Topic] = r.Offset + 1
			handled++
			if w := p.waiting[ftp.Topic]; w != nil {
				delete(p.waiting, ftp.Topic)
				c.log.Info("schema registry reachable again; partition resumed", zap.String("topic", ftp.Topic), zap.Int32("partition", p.id), zap.Int64("offset", r.Offset))
			}
			if err != nil {
				var pe *engine.PanicError
				if errors.As(err, &pe) {
					return r, pe
				}
				var de *engine.DecodeError
				if !errors.As(err, &de) {
					de = &engine.DecodeError{Reason: "error", Err: err}
				}
				p.dlq = append(p.dlq, c.deadLetter(r, de))
			}
			p.batch[ftp.Topic] = r.Offset
		}
	}
	// Counted once the whole batch went through: a rerun after a panic
	// counts nothing twice. Records held for a schema are not counted yet.
	c.records.Add(handled)
	for t, n := range skipped {
		c.skipped.WithLabelValues(t).Add(float64(n))
	}
	return nil, nil
}

// wait holds topic at offset until the schema it needs can be fetched, with
// a growing back-off between attempts.
func (p *partition) wait(topic string, offset int64, err error, now time.Time) {
	if p.waiting == nil {
		p.waiting = map[string]*schemaWait{}
	}
	w := p.waiting[topic]
	if w == nil {
		b := backoff.NewExponentialBackOff()
		b.InitialInterval, b.MaxInterval = 250*time.Millisecond, 5*time.Second
		w = &schemaWait{backoff: b}
		p.waiting[topic] = w
	}
	w.offset, w.err, w.held, w.due = offset, err, false, false
	w.retryAt = now.Add(w.backoff.NextBackOff())
}

// holdWaiting pauses fetching of every topic-partition that waits for a
// schema and rewinds it to the record it waits at, so the record is read
// again (and the offset committed for it is never past it).
func (c *Consumer) holdWaiting(now time.Time) {
	pause := map[string][]int32{}
	rewind := map[string]map[int32]kgo.EpochOffset{}
	for _, p := range c.parts {
		for t, w := range p.waiting {
			if w.held {
				continue
			}
			w.held = true
			pause[t] = append(pause[t], p.id)
			if rewind[t] == nil {
				rewind[t] = map[int32]kgo.EpochOffset{}
			}
			rewind[t][p.id] = kgo.EpochOffset{Epoch: -1, Offset: w.offset}
			c.log.Warn("schema registry unavailable; holding the partition at this record and retrying",
				zap.String("topic", t), zap.Int32("partition", p.id), zap.Int64("offset", w.offset),
				zap.Time("retry_at", w.retryAt), zap.Error(w.err))
		}
	}
	if len(pause) > 0 {
		c.cl.PauseFetchPartitions(pause)
		c.cl.SetOffsets(rewind)
	}
	c.countWaiting()
}

// resumeDue resumes fetching the held topic-partitions whose back-off has
// passed: their record is read and tried again in this or the next poll.
func (c *Consumer) resumeDue(now time.Time) {
	resume := map[string][]int32{}
	for _, p := range c.parts {
		for t, w := range p.waiting {
			if w.held && !w.due && !w.retryAt.After(now) {
				w.due = true
				resume[t] = append(resume[t], p.id)
			}
		}
	}
	if len(resume) > 0 {
		c.cl.ResumeFetchPartitions(resume)
	}
}

func (c *Consumer) countWaiting() {
	n := 0
	for _, p := range c.parts {
		n += len(p.waiting)
	}
	c.waitingParts.Set(float64(n))
}

func (c *Consumer) deadLetter(r *kgo.Record, de *engine.DecodeError) *kgo.Record {
	c.dlqCount.Add(1)
	c.dlqOut.WithLabelValues(r.Topic, de.Reason).Inc()
	msg := de.Error()
	if len(msg) > maxErrorHeader {
		// The message may quote the record; the record is there already.
		msg = msg[:maxErrorHeader] + "…"
	}
	dl := &kgo.Record{
		Topic:     c.cfg.DLQTopic,
		Partition: 0,
		Key:       r.Key,
		Value:     r.Value,
		Headers: []kgo.RecordHeader{
			{Key: "invmon.error", Value: []byte(msg)},
			{Key: "invmon.reason", Value: []byte(de.Reason)},
			{Key: "invmon.source.topic", Value: []byte(r.Topic)},
			{Key: "invmon.source.partition", Value: []byte(strconv.Itoa(int(r.Partition)))},
			{Key: "invmon.source.offset", Value: []byte(strconv.FormatInt(r.Offset, 10))},
			{Key: "invmon.stream", Value: []byte(de.Stream)},
			{Key: "invmon.rule", Value: []byte(de.Rule)},
		},
	}
	fitDeadLetter(dl, c.dlqLimit)
	return dl
}

// maxErrorHeader bounds the error message a dead letter carries.
const maxErrorHeader = 1024

// setDurable records the offsets of a batch that is now durable.
func (c *Consumer) setDurable(offs map[string]map[int32]kgo.EpochOffset) {
	c.durableMu.Lock()
	defer c.durableMu.Unlock()
	if c.durable == nil {
		c.durable = map[string]map[int32]kgo.EpochOffset{}
	}
	for t, ps := range offs {
		if c.durable[t] == nil {
			c.durable[t] = map[int32]kgo.EpochOffset{}
		}
		for p, o := range ps {
			c.durable[t][p] = o
		}
	}
}

// durableOffsets returns a copy of the offsets of the durable batches, per
// partition still owned.
func (c *Consumer) durableOffsets() map[string]map[int32]kgo.EpochOffset {
	c.durableMu.Lock()
	defer c.durableMu.Unlock()
	out := make(map[string]map[int32]kgo.EpochOffset, len(c.durable))
	for t, ps := range c.durable {
		out[t] = make(map[int32]kgo.EpochOffset, len(ps))
		for p, o := range ps {
			out[t][p] = o
		}
	}
	return out
}

// forgetDurable drops the offsets of partitions this member no longer owns,
// so a later revoke never commits them over their new owner's.
func (c *Consumer) forgetDurable(tps map[string][]int32) {
	c.durableMu.Lock()
	defer c.durableMu.Unlock()
	for t, ps := range tps {
		for _, p := range ps {
			delete(c.durable[t], p)
		}
	}
}

// refreshOffsets learns the start and end offsets of the assigned
// partitions, at most once per tick: an input is idle only once it has read
// up to its end.
func (c *Consumer) refreshOffsets(now time.Time) {
	if now.Sub(c.endsAt) < c.cfg.TickInterval || len(c.parts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := c.adm.ListEndOffsets(ctx, c.topics...)
	if err != nil {
		c.log.Warn("list end offsets", zap.Error(err))
		return
	}
	starts, err := c.adm.ListStartOffsets(ctx, c.topics...)
	if err != nil {
		c.log.Warn("list start offsets", zap.Error(err))
		return
	}
	c.ends, c.starts = toMap(ends), toMap(starts)
	c.endsAt = now
	for _, p := range c.parts {
		for _, t := range c.topics {
			if end, ok := c.ends[t][p.id]; ok {
				c.lag.WithLabelValues(t, strconv.Itoa(int(p.id))).Set(float64(max(0, end-c.position(p, t))))
			}
		}
	}
}

func toMap(offs kadm.ListedOffsets) map[string]map[int32]int64 {
	out := map[string]map[int32]int64{}
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.Offset
	})
	return out
}

// position is the next offset this member will process on topic/partition.
func (c *Consumer) position(p *partition, topic string) int64 {
	pos := p.applied[topic] + 1
	if n, ok := p.next[topic]; ok && n > pos {
		pos = n
	}
	if s, ok := c.starts[topic][p.id]; ok && s > pos {
		pos = s
	}
	return pos
}

func (c *Consumer) caughtUp(p *partition, topic string) bool {
	end, ok := c.ends[topic][p.id]
	return ok && c.position(p, topic) >= end
}

func (c *Consumer) onCommitted(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		c.log.Warn("commit offsets", zap.Error(err))
	}
}

// SetRules swaps in a new rule set between batches. Every batch's state is
// durable before the next begins, so the engines are simply dropped and
// rebuilt from Badger under the new rules on the next batch. Topics the new
// rules add are subscribed to; topics they no longer read stay subscribed
// until restart (their records are ignored).
func (c *Consumer) SetRules(ctx context.Context, rs *rules.RuleSet) error {
	topics := topicsOf(rs)
	details, err := c.adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	if err := CheckCoPartitioned(rs, details); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The engines are rebuilt from Badger: everything they did must be there.
	if err := c.flush(); err != nil {
		return err
	}
	var added []string
	known := map[string]bool{}
	for _, t := range c.topics {
		known[t] = true
	}
	for _, t := range topics {
		if !known[t] {
			added = append(added, t)
		}
	}
	c.rs, c.topics = rs, topics
	// Partitions held for a schema were rewound to their record: resuming
	// them reads it again under the new rules.
	resume := map[string][]int32{}
	for _, p := range c.parts {
		for t := range p.waiting {
			resume[t] = append(resume[t], p.id)
		}
	}
	c.cl.ResumeFetchPartitions(resume)
	c.parts = map[int32]*partition{}
	c.countWaiting()
	c.endsAt = time.Time{}
	if len(added) > 0 {
		c.cl.AddConsumeTopics(added...)
	}
	return nil
}

// recheckTopics repeats the co-partitioning check every 30s: partitions
// added to one topic at run time would silently stop its events from
// meeting the others', so the monitor stops with the reason instead.
func (c *Consumer) recheckTopics(now time.Time) error {
	if now.Sub(c.topicsCheckedAt) < 30*time.Second {
		return nil
	}
	c.topicsCheckedAt = now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	details, err := c.adm.ListTopics(ctx, c.topics...)
	if err != nil {
		c.log.Warn("describe topics", zap.Error(err))
		return nil
	}
	return CheckCoPartitioned(c.rs, details)
}
