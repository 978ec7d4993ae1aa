package replay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/rules"
)

// Reading: one client consumes every planned topic-partition from its next
// offset, assigned directly (no group, no commits). Records are buffered per
// topic-partition and applied per partition number in a fixed merge order:
// the record with the smallest (timestamp, topic, offset) among the heads of
// that partition's topics, taken only when every unfinished topic has a head.
// The order is therefore a function of the data alone, not of fetch timing,
// which makes a replay reproducible and a resumed one identical to an
// uninterrupted one. It also resembles what the live monitor sees: a
// reference table written before the window is known before the window's
// events are judged.

const (
	// maxBuffered bounds the records buffered per topic-partition: beyond it
	// the partition's fetching pauses until half of it is applied.
	maxBuffered = 20000
	// pollRecords bounds one poll.
	pollRecords = 10000
	// turn is how many records one partition number applies before the next
	// gets its turn, and before progress and checkpoints are looked at.
	turn = 256
)

func (r *runner) allDone() bool {
	for _, s := range r.tps {
		if !s.done() {
			return false
		}
	}
	return true
}

// read applies every planned record, or returns when ctx ends or reading
// fails as a whole. A partition that cannot be read is marked failed and the
// others go on.
func (r *runner) read(ctx context.Context, base []kgo.Opt) error {
	offsets := map[string]map[int32]kgo.Offset{}
	now := r.o.Now()
	for _, s := range r.tps {
		if s.done() {
			continue
		}
		if offsets[s.plan.Topic] == nil {
			offsets[s.plan.Topic] = map[int32]kgo.Offset{}
		}
		offsets[s.plan.Topic][s.plan.Partition] = kgo.NewOffset().At(s.next)
		s.fetched = s.next
		s.emptySince = now
	}
	r.lastCheckpoint = now
	if len(offsets) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(slices.Concat(base, []kgo.Opt{
		kgo.ConsumePartitions(offsets),
		// Never skip: an offset that no longer exists (records deleted while
		// the replay runs) is an error for that partition, not a silent jump
		// to the log start.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.FetchMaxWait(250 * time.Millisecond),
	})...)
	if err != nil {
		return fmt.Errorf("replay: kafka client: %w", err)
	}
	defer cl.Close()
	for {
		if err := r.drain(ctx); err != nil {
			return err
		}
		if r.allDone() {
			r.readEnd = r.o.Now()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.flowControl(cl)
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollRecords(pctx, pollRecords)
		cancel()
		if fetches.IsClientClosed() {
			return errors.New("replay: kafka client closed")
		}
		r.intake(fetches)
		r.checkStalls()
		if err := r.tick(); err != nil {
			return err
		}
	}
}

// intake buffers fetched records up to each partition's planned end.
func (r *runner) intake(fetches kgo.Fetches) {
	for _, fe := range fetches.Errors() {
		if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
			continue
		}
		s := r.byTP[fe.Topic][fe.Partition]
		if s == nil {
			r.log.Warn("fetch error", zap.String("topic", fe.Topic), zap.Int32("partition", fe.Partition), zap.Error(fe.Err))
			continue
		}
		r.fetchError(s, fe.Err)
	}
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		s := r.byTP[ftp.Topic][ftp.Partition]
		if s == nil || s.done() || ftp.Err != nil {
			return
		}
		for _, rec := range ftp.Records {
			if rec.Offset < s.fetched {
				continue // already buffered or applied
			}
			if rec.Offset >= s.plan.End {
				s.fetchedAll = true
				break
			}
			s.buf = append(s.buf, rec)
			s.fetched = rec.Offset + 1
		}
		if s.fetched >= s.plan.End {
			s.fetchedAll = true
		}
		s.settle()
		if len(s.buf) > 0 {
			s.emptySince = time.Time{}
			s.lastErr = nil
		}
	})
}

// fetchError classifies a fetch error: a deleted offset or a non-retriable
// error ends the partition's coverage; a retriable one is retried by the
// client and only remembered for the stall message.
func (r *runner) fetchError(s *tpState, err error) {
	switch {
	case errors.Is(err, kerr.OffsetOutOfRange):
		s.fail(fmt.Sprintf("offset %d is no longer in the log (records deleted while replaying): %v", s.fetched, err))
	case kerr.IsRetriable(err):
		s.lastErr = err
		r.log.Warn("fetch error, retrying", zap.String("partition", s.label), zap.Error(err))
		return
	default:
		s.fail(fmt.Sprintf("fetch from offset %d failed: %v", s.fetched, err))
	}
	r.log.Warn("partition not covered", zap.String("partition", s.label), zap.String("problem", s.failed))
}

// flowControl pauses fetching for partitions whose buffer is full or that
// have fetched their whole range, and resumes the others.
func (r *runner) flowControl(cl *kgo.Client) {
	pause, resume := map[string][]int32{}, map[string][]int32{}
	for _, s := range r.tps {
		if s.plan.Partition < 0 {
			continue
		}
		want := s.done() || s.fetchedAll || len(s.buf) >= maxBuffered
		if !want && s.paused && len(s.buf) > maxBuffered/2 {
			want = true // hysteresis: resume only once half is applied
		}
		switch {
		case want && !s.paused:
			pause[s.plan.Topic] = append(pause[s.plan.Topic], s.plan.Partition)
			s.paused = true
		case !want && s.paused:
			resume[s.plan.Topic] = append(resume[s.plan.Topic], s.plan.Partition)
			s.paused = false
		}
	}
	if len(pause) > 0 {
		cl.PauseFetchPartitions(pause)
	}
	if len(resume) > 0 {
		cl.ResumeFetchPartitions(resume)
	}
}

// checkStalls fails a partition that waited StallTimeout for records short
// of its planned end: the remaining offsets may hold nothing readable (only
// transaction markers, or a broker that stopped answering), and the replay
// must end with that said rather than hang.
func (r *runner) checkStalls() {
	now := r.o.Now()
	for _, s := range r.tps {
		if s.done() || len(s.buf) > 0 || s.emptySince.IsZero() || now.Sub(s.emptySince) < r.o.StallTimeout {
			continue
		}
		msg := fmt.Sprintf("no record arrived for %s at offset %d (planned end %d)", r.o.StallTimeout, s.fetched, s.plan.End)
		if s.lastErr != nil {
			msg += fmt.Sprintf("; last fetch error: %v", s.lastErr)
		}
		s.fail(msg)
		r.log.Warn("partition not covered", zap.String("partition", s.label), zap.String("problem", s.failed))
	}
}

// drain applies every record the merge order allows, partition by partition
// in turns, until no partition can go on without more data.
func (r *runner) drain(ctx context.Context) error {
	for {
		progressed := false
		for _, p := range r.parts {
			for range turn {
				s := p.pick()
				if s == nil {
					break
				}
				if r.limiter != nil {
					if err := r.limiter.Wait(ctx); err != nil {
						if ctx.Err() != nil {
							return ctx.Err()
						}
						return fmt.Errorf("replay: rate limit: %w", err)
					}
				}
				rec := s.buf[0]
				s.buf[0] = nil
				s.buf = s.buf[1:]
				if len(s.buf) == 0 {
					s.buf = nil // let the backing array go
					if !s.fetchedAll {
						s.emptySince = r.o.Now()
					}
				}
				if err := r.waitForSchema(ctx, p, rec); err != nil {
					return err
				}
				r.apply(p, s, rec)
				s.settle()
				progressed = true
			}
			if err := r.tick(); err != nil {
				return err
			}
		}
		if !progressed {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// settle finishes a topic-partition whose last planned offsets hold no
// record (compaction removed them): once a record at or past the planned end
// arrived and everything before it is applied, nothing is left to read.
func (s *tpState) settle() {
	if s.fetchedAll && len(s.buf) == 0 && s.next < s.plan.End && s.failed == "" {
		s.next = s.plan.End
	}
}

// pick returns the topic-partition whose head record comes next, or nil when
// an unfinished topic-partition has nothing buffered (its next record might
// come first) or everything is applied.
func (p *part) pick() *tpState {
	var best *tpState
	for _, s := range p.tps {
		if s.done() {
			continue
		}
		if len(s.buf) == 0 {
			return nil
		}
		if best == nil || recordBefore(s.buf[0], best.buf[0]) {
			best = s
		}
	}
	return best
}

// recordBefore is the merge order: timestamp, then topic, then offset.
func recordBefore(a, b *kgo.Record) bool {
	if !a.Timestamp.Equal(b.Timestamp) {
		return a.Timestamp.Before(b.Timestamp)
	}
	if a.Topic != b.Topic {
		return a.Topic < b.Topic
	}
	return a.Offset < b.Offset
}

// apply feeds one record to the partition's engine on the event-time clock
// and advances the watermarks, so a deadline is judged as soon as the
// records read allow, with the clock of that moment.
// waitForSchema returns once rec's value can be decoded or is poison: while
// the Schema Registry cannot serve its schema, the replay waits and tries
// again (250 ms growing to 5 s) rather than count the record as rejected.
func (r *runner) waitForSchema(ctx context.Context, p *part, rec *kgo.Record) error {
	var b *backoff.ExponentialBackOff
	for {
		_, err := p.dec.Decode(rec.Topic, rec.Partition, rec.Offset, rec.Key, rec.Value, rec.Timestamp)
		if !errors.Is(err, rules.ErrSchemaUnavailable) {
			return nil
		}
		if b == nil {
			b = backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval = 250*time.Millisecond, 5*time.Second
		}
		wait := b.NextBackOff()
		r.log.Warn("schema registry unavailable; waiting to read the record", zap.String("topic", rec.Topic),
			zap.Int32("partition", rec.Partition), zap.Int64("offset", rec.Offset), zap.Duration("retry_in", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func (r *runner) apply(p *part, s *tpState, rec *kgo.Record) {
	if r.readStart.IsZero() {
		r.readStart = r.o.Now()
	}
	if ev, err := p.dec.Decode(rec.Topic, rec.Partition, rec.Offset, rec.Key, rec.Value, rec.Timestamp); err == nil {
		for _, st := range r.clockStreams[rec.Topic] {
			if t, err := st.Time.Eval(ev); err == nil && t.After(p.clock) {
				p.clock = t
			}
		}
		// Entities checked: those with a triggering event in the window,
		// whatever the verdict.
		for _, tr := range r.triggers[rec.Topic] {
			t, err := tr.side.Stream.Time.Eval(ev)
			if err != nil || t.Before(r.plan.From) || !t.Before(r.plan.To) {
				continue
			}
			if ok, err := tr.side.Condition.Eval(ev); err != nil || !ok {
				continue
			}
			if key, err := tr.side.Key.Eval(ev); err == nil {
				p.book.entity(tr.rule, key)
			}
		}
	}
	er := engine.Record{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Key: rec.Key, Value: rec.Value, Timestamp: rec.Timestamp}
	if err := p.eng.Apply(&er, p.clock); err != nil {
		reason := "error"
		var de *engine.DecodeError
		if errors.As(err, &de) {
			reason = de.Reason
		}
		p.book.deadLetter(rec.Topic, reason, rec.Offset, err.Error())
	}
	p.eng.Advance(p.clock)
	s.next = rec.Offset + 1
	s.read++
	p.applied[rec.Topic] = rec.Offset
	r.readThisRun++
	r.readEnd = r.o.Now()
}

// tick shows progress and checkpoints when due.
func (r *runner) tick() error {
	now := r.o.Now()
	r.prog.update(now)
	if now.Sub(r.lastCheckpoint) >= r.o.CheckpointInterval {
		return r.checkpoint()
	}
	return nil
}
