// Package changes is the stream of violation changes of a consumer group:
// every violation that opens or resolves, as the group sees it, and the one
// way violation changes reach alerting and the API.
//
// Each member owns some partitions and so knows only their violations;
// paging on those alone would split one rule's alert into partial counts
// per member, with tiers that disagree. So every change a member makes is
// written, acknowledged by the brokers before the member's state commit
// that makes it durable, to the group's compacted topic StateTopic
// ("<group>.violations-state"), keyed by violation id (consumer's commit
// pipeline, whatever kafka.changelog says). Every member follows that topic
// whole (Follow) into its group view (joinstate.GroupView, a View), a
// persisted copy in its local database, and tells its Subscribers which
// violations changed: alert.Manager aggregates each rule's open violations
// from the view, and the HTTP API reads its pages there.
//
// The topic holds at least what the members' durable state holds; it may
// hold a change twice (produced again after a crash between the
// acknowledgement and the state commit, ids being deterministic), and a
// change whose state commit a crash lost, which the records' new reading
// usually, but for a clock-dependent verdict not always, makes again (see
// docs/ARCHITECTURE.md). The view applies the latest change of each
// violation and reports a change equal to what it holds as none.
//
// This topic is internal and holds the group's violations as they are (the
// latest record of each id). It is not the violation events topic
// (kafka.violation_events_topic, package outbox), which publishes each
// opening and resolution once, minimised by the privacy settings, for other
// systems.
package changes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/violation"
)

// StateTopic returns the topic of a group's violation changes.
func StateTopic(group string) string { return group + ".violations-state" }

// EnsureTopic creates the group's StateTopic, compacted with one partition
// (one order for every member to read), unless it exists.
func EnsureTopic(ctx context.Context, adm *kadm.Client, group string) error {
	if _, err := kafkaconn.EnsureTopic(ctx, adm, StateTopic(group), 1, kafkaconn.Compacted()); err != nil {
		return fmt.Errorf("violation changes topic: %w", err)
	}
	return nil
}

// Records renders violation changes as records of the group's StateTopic.
func Records(group string, changed []violation.Violation) ([]*kgo.Record, error) {
	out := make([]*kgo.Record, 0, len(changed))
	for i := range changed {
		b, err := json.Marshal(&changed[i])
		if err != nil {
			return nil, fmt.Errorf("encode violation: %w", err)
		}
		out = append(out, &kgo.Record{Topic: StateTopic(group), Partition: 0, Key: []byte(changed[i].ID), Value: b})
	}
	return out, nil
}

// View is where Follow applies the stream: joinstate.GroupView.
type View interface {
	// Next is the offset the view has read up to (the next to read).
	Next() (int64, error)
	// Apply writes the changes read, in stream order, with next, the offset
	// after the last of them, and returns those that changed the view.
	Apply(next int64, changes []violation.Violation) ([]violation.Violation, error)
	// Expire drops the violations resolved before before.
	Expire(before time.Time) (int, error)
	// Reset empties the view, offset included.
	Reset() error
}

// Subscriber is told about the view (alert.Manager is one).
type Subscriber interface {
	// CaughtUp is called once, when the view holds every change the stream
	// held when Follow started: until then the view may be behind the
	// group (resolved since by another member, or not yet seen).
	CaughtUp()
	// Observe is called, after Apply, with the changes that changed the
	// view, in stream order.
	Observe(vs ...violation.Violation)
}

// FollowConfig configures Follow.
type FollowConfig struct {
	// Brokers and Opts (TLS, SASL) reach the cluster.
	Brokers []string
	Opts    []kgo.Opt
	// Group is the consumer group whose StateTopic is followed.
	Group string
	// View receives the changes. Required.
	View View
	// Retention is how long the view keeps resolved violations
	// (state.violation_retention). Default 30 days.
	Retention time.Duration
	// Now is the clock of the retention. Default time.Now.
	Now func() time.Time
	// Subscribers are told of caught-up and of every change.
	Subscribers []Subscriber
	// Log is the follower's logger. Default none.
	Log *zap.Logger
}

// expireEvery is how often the view's expired violations are dropped.
const expireEvery = time.Minute

// Follow reads the group's StateTopic into cfg.View until ctx ends, from
// where the view stands (its start for an empty view), one poll per
// transaction of the view. A view ahead of the topic's end (the topic was
// deleted and made again) is reset and read again from the start.
func Follow(ctx context.Context, cfg FollowConfig) error {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 30 * 24 * time.Hour
	}
	log := cfg.Log
	topic := StateTopic(cfg.Group)
	next, err := cfg.View.Next()
	if err != nil {
		return fmt.Errorf("violation changes: %w", err)
	}
	adm, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.Opts...)...)
	if err != nil {
		return fmt.Errorf("violation changes client: %w", err)
	}
	end, err := endOffset(ctx, adm, topic)
	adm.Close()
	if err != nil || ctx.Err() != nil {
		return err
	}
	if next > end {
		log.Warn("the group view has read further than the violation changes topic holds (the topic was made again): reading it again from the start",
			zap.String("topic", topic), zap.Int64("view", next), zap.Int64("end", end))
		if err := cfg.View.Reset(); err != nil {
			return fmt.Errorf("violation changes: %w", err)
		}
		next = 0
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(next)}}),
		// A view behind the topic's start (records deleted) reads what
		// there is: applying is idempotent.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}, cfg.Opts...)...)
	if err != nil {
		return fmt.Errorf("violation changes client: %w", err)
	}
	defer cl.Close()
	caughtUp := false
	catchUp := func() {
		caughtUp = true
		for _, s := range cfg.Subscribers {
			s.CaughtUp()
		}
		log.Info("group view caught up with the violation changes", zap.Int64("records", end))
	}
	if next >= end {
		catchUp()
	}
	var expired time.Time
	for {
		if now := cfg.Now(); now.Sub(expired) >= expireEvery {
			if n, err := cfg.View.Expire(now.Add(-cfg.Retention)); err != nil {
				log.Warn("expire resolved violations of the group view", zap.Error(err))
			} else if n > 0 {
				log.Debug("expired resolved violations of the group view", zap.Int("violations", n))
			}
			expired = now
		}
		// Polls return at least every second, so expiry runs on a quiet topic.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		for _, fe := range fs.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) {
				log.Warn("read violation changes", zap.Error(fe.Err))
			}
		}
		var vs []violation.Violation
		last := int64(-1)
		fs.EachRecord(func(r *kgo.Record) {
			last = r.Offset
			if r.Value == nil {
				return
			}
			var v violation.Violation
			if err := json.Unmarshal(r.Value, &v); err != nil {
				log.Warn("undecodable violation change", zap.Int64("offset", r.Offset), zap.Error(err))
				return
			}
			vs = append(vs, v)
		})
		if last < 0 {
			continue
		}
		changed, err := cfg.View.Apply(last+1, vs)
		if err != nil {
			// The view is the one input of alerting and the API: a view that
			// cannot be written stops the monitor rather than page on a
			// stale one.
			return fmt.Errorf("violation changes: %w", err)
		}
		if len(changed) > 0 {
			for _, s := range cfg.Subscribers {
				s.Observe(changed...)
			}
		}
		if !caughtUp && last+1 >= end {
			catchUp()
		}
	}
}

// endOffset is the topic's end offset now: where catching up ends. It
// retries until the broker answers, since alerting waits for it anyway.
func endOffset(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	adm := kadm.NewClient(cl)
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			if o, ok := ends.Lookup(topic, 0); ok && o.Err == nil {
				return o.Offset, nil
			} else if ok {
				err = o.Err
			}
		}
		select {
		case <-ctx.Done():
			return 0, nil
		case <-time.After(time.Second):
		}
	}
}
