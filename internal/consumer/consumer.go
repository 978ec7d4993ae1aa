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
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kzap"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/rules"
)

// DefaultMaxPollRecords is the default bound of one batch. Larger batches
// amortize the synced Badger commit over more records, but up to three are
// in memory at once (one evaluated, one producing its changelog, one being
// written to Badger), and with every rule on, 50,000 records of them kept
// the heap at the memory limit: the collector then ran nearly without
// pause. At 20,000 the five-rule benchmark spent about a sixth less CPU,
// most of it marking and assists (README, Benchmark).
const DefaultMaxPollRecords = 20_000

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
	// Changelog appends every state write to "<group>.changelog" so a member
	// that gains a partition restores its state from there. Default off;
	// monitor enables it unless configured otherwise.
	Changelog bool
	// MaxPollRecords bounds one batch: the unit of state writes and commits.
	// Default DefaultMaxPollRecords.
	MaxPollRecords int
	// TickInterval is how often the watermarks are advanced when no records
	// arrive, so absence is detected on a silent stream. Default 1s.
	TickInterval time.Duration
	// ProduceTimeout bounds how long a batch waits for the brokers to
	// acknowledge its dead letters, changelog and violation-change records; past it the
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
		c.MaxPollRecords = DefaultMaxPollRecords
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
	cfg    Config
	rs     *rules.RuleSet
	store  *joinstate.Store
	log    *zap.Logger
	cl     *kgo.Client
	adm    *kadm.Client
	topics []string
	// changelogName is the changelog topic, "<group>.changelog": built
	// once, as it is read for every changelog record.
	changelogName string
	metrics       *engine.Metrics
	lag           *prometheus.GaugeVec
	dlqOut        *prometheus.CounterVec
	// skipped counts records read again at or below the applied offset.
	skipped *prometheus.CounterVec
	// schemaRetries counts records held back because their schema could not
	// be fetched; waitingParts is how many topic-partitions wait now.
	schemaRetries *prometheus.CounterVec
	waitingParts  prometheus.Gauge
	// stages times each stage of a batch.
	stages *stageMetrics

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

	// commitq feeds the pipeline's producer stage, stateq its state stage
	// (see commit.go); commits counts batches not yet durable; commitErr
	// holds the first failure.
	commitq   chan *batch
	stateq    chan *batch
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
		topics:        topicsOf(rs),
		changelogName: cfg.Group + ".changelog",
		assigned:      map[string]map[int32]bool{},
		parts:         map[int32]*partition{},
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
			Name: "invmon_state_produce_failures_total", Help: "Batches whose dead letters, changelog or violation-change records were not acknowledged in time; each stops the member without committing.",
		}),
		schemaRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "invmon_schema_registry_retries_total", Help: "Records held back, to be read again, because the Schema Registry could not serve their schema; per topic.",
		}, []string{"topic"}),
		waitingParts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "invmon_schema_waiting_partitions", Help: "Topic-partitions held at a record whose schema the Schema Registry could not serve.",
		}),
		stages: newStageMetrics(),
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
				Name: "invmon_state_produce_waiting_seconds", Help: "How long the current batch has waited for the brokers to acknowledge its dead letters, changelog and violation-change records; 0 when none waits.",
			}, c.produceWaiting))
		cfg.Registerer.MustRegister(c.stages.collectors()...)
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
	// One batch may wait for the producer stage while another is produced
	// and a third written to Badger: enough to overlap evaluation, the
	// produce and the Badger commit, and a bound on memory (every batch in
	// flight stays readable in its engine's overlay until it is durable).
	// The state stage takes a batch only when it is free.
	c.commitq = make(chan *batch, 1)
	c.stateq = make(chan *batch)
	go c.producer()
	go c.stateCommitter()
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
