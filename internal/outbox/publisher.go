// Package outbox publishes violation changes to a Kafka topic exactly once,
// for downstream repair workflows.
//
// Changes are queued in Badger in the same transaction as the state change
// that made them (joinstate's outbox), so none is lost if the monitor dies
// after deciding. The publisher sends them in Kafka transactions that also
// record how far it got in a progress topic; after a crash it reads that
// progress and drops what was already published, so none is sent twice.
package outbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/privacy"
)

// Config configures a Publisher.
type Config struct {
	// Brokers and Opts (TLS, SASL) reach the cluster.
	Brokers []string
	Opts    []kgo.Opt
	// Topic receives one record per violation change, keyed by violation id,
	// with the header invmon.event = opened or resolved. Required.
	Topic string
	// Partitions of Topic when the publisher creates it. Default 3.
	Partitions int32
	// Interval is how often the outbox is polled when idle. Default 200ms.
	Interval time.Duration
	// Batch bounds the changes in one transaction. Default 1000.
	Batch int
	// Minimize is applied to each violation before it is published: the
	// topic's readers see customer ids and keys as the privacy settings
	// show them. Default nil: as stored.
	Minimize *privacy.Minimizer
}

// Publisher drains the outbox into the topic.
type Publisher struct {
	cfg      Config
	store    *joinstate.Store
	log      *zap.Logger
	cl       *kgo.Client
	member   string
	progress string
}

// New creates the topics when missing and a transactional producer named
// after this state directory's member id.
func New(ctx context.Context, cfg Config, store *joinstate.Store, log *zap.Logger) (*Publisher, error) {
	if cfg.Topic == "" {
		return nil, errors.New("outbox: no topic")
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 3
	}
	if cfg.Interval == 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.Batch == 0 {
		cfg.Batch = 1000
	}
	member, err := store.MemberID()
	if err != nil {
		return nil, fmt.Errorf("outbox: member id: %w", err)
	}
	p := &Publisher{cfg: cfg, store: store, log: log, member: member, progress: cfg.Topic + ".progress"}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.TransactionalID("invmon-outbox-" + member),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}, cfg.Opts...)
	if p.cl, err = kgo.NewClient(opts...); err != nil {
		return nil, fmt.Errorf("outbox: kafka client: %w", err)
	}
	adm := kadm.NewClient(p.cl)
	if _, err := kafkaconn.EnsureTopic(ctx, adm, cfg.Topic, cfg.Partitions, nil); err != nil {
		p.cl.Close()
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if _, err := kafkaconn.EnsureTopic(ctx, adm, p.progress, 1, kafkaconn.Compacted()); err != nil {
		p.cl.Close()
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return p, nil
}

// Close closes the producer.
func (p *Publisher) Close() { p.cl.Close() }

// Run publishes until ctx is done.
func (p *Publisher) Run(ctx context.Context) error {
	last, err := p.published(ctx)
	if err != nil {
		return err
	}
	// Entries up to the recorded progress went out before a crash that
	// left them in the outbox: drop them instead of sending them again.
	if last > 0 {
		if err := p.store.OutboxDone(last); err != nil {
			return err
		}
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			// A graceful stop publishes what is already decided, so a
			// reader of the topic need not wait for the next start. What
			// does not go out in time stays in the outbox for that start.
			dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
			defer cancel()
			if err := p.drain(dctx); err != nil {
				p.log.Warn("publish violations at shutdown; they go out at the next start", zap.Error(err))
			}
			return nil
		}
		if err := p.drain(ctx); err != nil && ctx.Err() == nil {
			// The outbox keeps the batch; it goes out with the next try.
			p.log.Warn("publish violations", zap.Error(err))
		}
	}
}

// drainTimeout bounds the last publication at shutdown.
const drainTimeout = 5 * time.Second

// drain publishes batches until the outbox is empty or one fails.
func (p *Publisher) drain(ctx context.Context) error {
	for {
		n, err := p.publishBatch(ctx)
		if err != nil || n < p.cfg.Batch {
			return err
		}
	}
}

func (p *Publisher) publishBatch(ctx context.Context) (int, error) {
	entries, err := p.store.Outbox(p.cfg.Batch)
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	if err := p.cl.BeginTransaction(); err != nil {
		return 0, err
	}
	for _, e := range entries {
		b, err := json.Marshal(p.cfg.Minimize.Violation(e.Violation))
		if err != nil {
			return 0, p.abort(ctx, err)
		}
		p.cl.Produce(ctx, &kgo.Record{
			Topic: p.cfg.Topic,
			Key:   []byte(e.Violation.ID),
			Value: b,
			Headers: []kgo.RecordHeader{
				{Key: "invmon.event", Value: []byte(e.Event)},
				{Key: "invmon.outbox.seq", Value: []byte(strconv.FormatUint(e.Seq, 10))},
			},
		}, nil)
	}
	last := entries[len(entries)-1].Seq
	p.cl.Produce(ctx, &kgo.Record{Topic: p.progress, Key: []byte(p.member), Value: binary.BigEndian.AppendUint64(nil, last)}, nil)
	if err := p.cl.Flush(ctx); err != nil {
		return 0, p.abort(ctx, err)
	}
	if err := p.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return 0, p.abort(ctx, err)
	}
	return len(entries), p.store.OutboxDone(last)
}

func (p *Publisher) abort(ctx context.Context, cause error) error {
	if err := p.cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		return errors.Join(cause, fmt.Errorf("abort: %w", err))
	}
	return cause
}

// published reads the last committed progress of this member.
func (p *Publisher) published(ctx context.Context) (uint64, error) {
	adm := kadm.NewClient(p.cl)
	ends, err := adm.ListEndOffsets(ctx, p.progress)
	if err != nil {
		return 0, fmt.Errorf("outbox: progress end: %w", err)
	}
	end, ok := ends.Lookup(p.progress, 0)
	if !ok || end.Err != nil || end.Offset == 0 {
		return 0, nil
	}
	rd, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(p.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.progress: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}, p.cfg.Opts...)...)
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	var last uint64
	read := 0
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		// Transaction markers take offsets but are never returned, so the
		// end offset cannot be matched to a record: read until a poll comes
		// back empty. Only this member writes its key, and it is not
		// publishing yet.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := rd.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if string(r.Key) == p.member && len(r.Value) == 8 {
				last = binary.BigEndian.Uint64(r.Value)
			}
		})
		read += n
		if n == 0 && (read > 0 || time.Until(deadline) < 25*time.Second) {
			return last, nil
		}
	}
	return 0, fmt.Errorf("outbox: progress topic %s not read within 30s", p.progress)
}
