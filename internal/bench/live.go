package bench

// The state benchmark's live phase: detection delay under live load, with
// the state the fill left.

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/invmon/invmon/internal/consumer"
	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/violation"
)

// LiveOptions shape the live phase of the state benchmark. After the fill and
// the restart, events are produced live (event time = wall time) at Load
// times the rate of the fill's last tenth (the rate with the state nearly
// full), and every MissingEvery-th captured payment of the
// injection window gets no ledger entry, so its absence violation comes due.
// The phase measures, for each of them, the wall time from its deadline plus
// the allowed lateness to the violation being recorded durably.
type LiveOptions struct {
	// Duration is how long triggers without their ledger entry are
	// injected; 0 skips the phase. The phase runs longer: a warm-up before
	// it, and after it until the last injected deadline + lateness passed.
	Duration time.Duration
	// Load is the live rate as a share of the rate the fill measured over
	// its last tenth. Default 0.8.
	Load float64
	// MissingEvery: every MissingEvery-th captured payment of the injection
	// window gets no ledger entry. Default 200.
	MissingEvery int
	// Within is the absence rule's within and Lateness the allowed lateness
	// of both streams, for the fill too. Defaults 30s and 5s, the example
	// domain's; tests shorten them.
	Within, Lateness time.Duration
	// Warmup is the least time the live load runs before the injection
	// starts; it then also waits until the engine has caught up with the
	// live stream (the first batch after the restart expires the expect
	// events the wall clock's jump has put out of the redelivery window).
	// Default 3s.
	Warmup time.Duration
}

// MaxWarmup bounds the warm-up: an engine that has not caught up with the
// live load by then never will, and the delays measured say so.
const MaxWarmup = time.Minute

// livePollRecords bounds one live batch, as the consumer's MaxPollRecords
// bounds one poll.
const livePollRecords = consumer.DefaultMaxPollRecords

// slowCycle is how long a live cycle must take to be reported as it happens.
const slowCycle = 500 * time.Millisecond

// liveCaughtUp is how far behind the wall clock the oldest record of a
// batch may be for the engine to count as caught up with the live stream.
const liveCaughtUp = 250 * time.Millisecond

func (o LiveOptions) withDefaults() LiveOptions {
	if o.Load <= 0 {
		o.Load = 0.8
	}
	if o.MissingEvery <= 0 {
		o.MissingEvery = 200
	}
	if o.Within <= 0 {
		o.Within = 30 * time.Second
	}
	if o.Lateness <= 0 {
		o.Lateness = 5 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = 3 * time.Second
	}
	return o
}

// ruleText is the state benchmark's rule file with the options' within and
// lateness.
func (o LiveOptions) ruleText() string {
	return fmt.Sprintf(stateRules, ruleDuration(o.Within), ruleDuration(o.Lateness))
}

// ruleDuration writes d as a rule file's duration (whole units only).
func ruleDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// LiveResult is what the live phase measured.
type LiveResult struct {
	// Rate is the paced rate in events/s; Events how many were applied, over
	// Elapsed (warm-up and drain included).
	Rate    float64
	Events  int
	Elapsed time.Duration
	// Warmup is how long the load ran before the injection started.
	Warmup time.Duration
	// MaxLag is the largest time a record of the injection window and after
	// waited between being produced and being applied.
	MaxLag time.Duration
	// Batches is how many batches were committed after the warm-up.
	Batches int
	// Cycles are, sorted, the durations of those batches from taking their
	// records to being durable; Advances the longest partition's advance in
	// each, Syncs each synced commit (the committer's, while the next batch
	// is evaluated).
	Cycles, Advances, Syncs []time.Duration
	// PeakRSSBefore is the process's peak RSS in bytes when the phase began:
	// the fill's and the restart's, apart from the live phase's.
	PeakRSSBefore int64
	// Injected is how many captured payments got no ledger entry.
	Injected int
	// Delays are, sorted, for each injected trigger whose violation was
	// recorded: the wall time from its deadline + lateness to the violation
	// being durable.
	Delays []time.Duration
	// Missing are the payment ids of injected triggers with no violation
	// recorded; Unexpected the ids of violations recorded for anything else.
	Missing, Unexpected []string
}

// Exact reports whether the violations recorded are exactly the injected ones.
func (r *LiveResult) Exact() bool {
	return r.Injected > 0 && len(r.Delays) == r.Injected && len(r.Missing) == 0 && len(r.Unexpected) == 0
}

// Quantile returns the q-quantile (0..1) of the delays, nearest rank; 0
// when none was measured.
func (r *LiveResult) Quantile(q float64) time.Duration { return Quantile(r.Delays, q) }

// Quantile returns the q-quantile (0..1) of sorted durations, nearest rank;
// 0 when there are none.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// liveLoad is the live producer: pair j (a captured payment and, unless it
// is injected as missing, its ledger entry) is produced at start + j/rate
// of the wall clock, with that time as its event time.
type liveLoad struct {
	start    time.Time
	pairRate float64
}

func (l liveLoad) at(j int) time.Time {
	return l.start.Add(time.Duration(float64(j) / l.pairRate * float64(time.Second)))
}

// due returns how many pairs have been produced by now.
func (l liveLoad) due(now time.Time) int {
	return int(now.Sub(l.start).Seconds()*l.pairRate) + 1
}

// runLive is the live phase over the restarted partitions. It drives them
// as the fill does and the consumer does: take what has been produced (at
// most a poll's worth), apply each partition's records and advance it with
// the wall clock as now, the partitions in parallel, and hand the deltas
// with the applied offsets to one committer goroutine, which makes them
// durable, synced, in order, while the next batch is evaluated.
func runLive(store *joinstate.Store, parts []*engine.Partition, offsets []int64, fillRate float64, o LiveOptions, progress io.Writer) (*LiveResult, error) {
	res := &LiveResult{Rate: fillRate * o.Load}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		res.PeakRSSBefore = ru.Maxrss << 10
	}
	load := liveLoad{start: time.Now(), pairRate: res.Rate / 2}
	if load.pairRate <= 0 {
		return nil, fmt.Errorf("live phase: no fill rate to pace by")
	}
	if progress != nil {
		fmt.Fprintf(progress, "bench --state: live load at %.0f events/s (%.0f%% of the rate of the fill's last tenth), %s of injected absences ...\n",
			res.Rate, 100*o.Load, o.Duration)
	}
	rec := &liveRecorder{res: res, injected: map[string]time.Time{}, seen: map[string]bool{},
		dueAfter: o.Within + o.Lateness, start: load.start, progress: progress}
	commits := make(chan *liveBatch, 1)
	committed := make(chan error, 1)
	go func() {
		var err error
		for b := range commits {
			if err == nil {
				syncing := time.Now()
				if err = store.Commit(b.pds...); err == nil {
					rec.durable(b, syncing, time.Now())
				}
			}
		}
		committed <- err
	}()
	var (
		injectFrom, injectUntil time.Time // zero until the warm-up is over
		lastDue                 time.Time // of the last injected trigger
		next                    int
		commitErr               error
		lastReport              = load.start
		errs                    = make([]error, len(parts))
		missing                 = make([][]int, len(parts))
		events                  = make([]int, len(parts))
		advances                = make([]time.Duration, len(parts))
	)
	for commitErr == nil {
		now := time.Now()
		due := min(load.due(now), next+livePollRecords/2)
		if due <= next {
			time.Sleep(load.at(next).Sub(now))
			continue
		}
		lag := now.Sub(load.at(next))
		if injectFrom.IsZero() && now.Sub(load.start) >= o.Warmup && (lag < liveCaughtUp || now.Sub(load.start) >= MaxWarmup) {
			injectFrom, injectUntil = now, now.Add(o.Duration)
			res.Warmup = now.Sub(load.start)
		}
		first := next
		next = due
		caughtUp := load.due(now) <= next
		injecting := func(j int) bool {
			at := load.at(j)
			return !injectFrom.IsZero() && !at.Before(injectFrom) && at.Before(injectUntil) && j%o.MissingEvery == 0
		}
		var wg sync.WaitGroup
		for p := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				events[p], missing[p], errs[p] = livePairs(parts[p], int32(p), len(parts), first, due, load, now, &offsets[p], injecting, missing[p][:0])
				if errs[p] != nil {
					return
				}
				parts[p].SetCaughtUp("payments", caughtUp)
				parts[p].SetCaughtUp("ledger", caughtUp)
				advancing := time.Now()
				parts[p].Advance(now)
				advances[p] = time.Since(advancing)
				errs[p] = parts[p].Err()
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			close(commits)
			<-committed
			return nil, fmt.Errorf("live phase: %w", err)
		}
		b := &liveBatch{taken: now, evaluated: time.Now(), measured: !injectFrom.IsZero()}
		for p := range parts {
			b.pds = append(b.pds, joinstate.PartitionDelta{Partition: int32(p), Delta: parts[p].TakeDelta(),
				Offsets: map[string]int64{"payments": offsets[p], "ledger": offsets[p]}})
			b.records += events[p]
			b.advance = max(b.advance, advances[p])
		}
		// Known as injected before the batch reaches the committer, which
		// is the only one to find their violations.
		rec.mu.Lock()
		for p := range parts {
			for _, j := range missing[p] {
				at := load.at(j)
				rec.injected["pay-L"+strconv.Itoa(j)] = at
				res.Injected++
				if d := at.Add(rec.dueAfter); d.After(lastDue) {
					lastDue = d
				}
			}
		}
		res.Events += b.records
		if b.measured {
			res.MaxLag = max(res.MaxLag, lag)
			res.Batches++
		}
		pending := len(rec.injected)
		rec.mu.Unlock()
		select {
		case commitErr = <-committed:
		case commits <- b:
		}
		if progress != nil && now.Sub(lastReport) >= 5*time.Second {
			lastReport = now
			rec.mu.Lock()
			fmt.Fprintf(progress, "bench --state: live %.0f s, %d events, %d of %d injected absences recorded, lag %.3f s\n",
				now.Sub(load.start).Seconds(), res.Events, len(res.Delays), res.Injected, lag.Seconds())
			rec.mu.Unlock()
		}
		if !injectFrom.IsZero() && now.After(injectUntil) && !now.Before(lastDue) {
			// Every injected deadline + lateness has passed: go on a second
			// for stragglers, at most ten while any is still missing.
			if (pending == 0 && now.Sub(lastDue) >= time.Second) || now.Sub(lastDue) >= 10*time.Second {
				break
			}
		}
	}
	close(commits)
	if err := <-committed; err != nil {
		return nil, fmt.Errorf("live phase: %w", err)
	}
	if commitErr != nil {
		return nil, fmt.Errorf("live phase: %w", commitErr)
	}
	res.Elapsed = time.Since(load.start)
	for key := range rec.injected {
		res.Missing = append(res.Missing, key)
	}
	slices.Sort(res.Missing)
	slices.Sort(res.Delays)
	slices.Sort(res.Cycles)
	slices.Sort(res.Advances)
	slices.Sort(res.Syncs)
	return res, nil
}

// livePairs applies to partition p (of partitions) its share of the live
// pairs [lo, hi), pair j on partition j mod partitions, and returns how
// many records it applied and, appended to missing, the pairs it injected
// as absences (no ledger entry).
func livePairs(part *engine.Partition, p int32, partitions, lo, hi int, load liveLoad, now time.Time, offset *int64,
	injecting func(int) bool, missing []int) (int, []int, error) {
	var buf []byte
	records := 0
	for j := lo + (int(p)-lo%partitions+partitions)%partitions; j < hi; j += partitions {
		at := load.at(j)
		id := "L" + strconv.Itoa(j)
		*offset++
		buf = appendPayment(buf[:0], id, at)
		if err := part.Apply(&engine.Record{Topic: "payments", Partition: p, Offset: *offset, Value: buf}, now); err != nil {
			return records, missing, err
		}
		records++
		if injecting(j) {
			missing = append(missing, j)
			continue
		}
		buf = appendLedgerEntry(buf[:0], id, at)
		if err := part.Apply(&engine.Record{Topic: "ledger", Partition: p, Offset: *offset, Value: buf}, now); err != nil {
			return records, missing, err
		}
		records++
	}
	return records, missing, nil
}

// liveBatch is one live cycle's deltas on their way to the committer.
type liveBatch struct {
	pds []joinstate.PartitionDelta
	// taken is when its records were taken, evaluated when every partition
	// was applied and advanced; advance the longest partition's advance.
	taken, evaluated time.Time
	advance          time.Duration
	records          int
	// measured is false for the warm-up's batches.
	measured bool
}

// liveRecorder is what the committer records of each durable batch: the
// violations it holds, and the batch's timings.
type liveRecorder struct {
	mu       sync.Mutex
	res      *LiveResult
	injected map[string]time.Time // not yet recorded, by payment id
	seen     map[string]bool      // violation ids recorded
	dueAfter time.Duration
	start    time.Time
	progress io.Writer
}

func (r *liveRecorder) durable(b *liveBatch, syncing, recorded time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pd := range b.pds {
		for _, v := range pd.Delta.Changed {
			if r.seen[v.ID] {
				continue
			}
			r.seen[v.ID] = true
			r.res.record(v, r.injected, r.dueAfter, recorded)
		}
	}
	cycle := recorded.Sub(b.taken)
	if r.progress != nil && cycle >= slowCycle {
		fmt.Fprintf(r.progress, "bench --state: live %.0f s: a slow cycle of %.3f s: %d records applied and advanced in %.3f s (the longest advance %.3f s), waited %.3f s for the commit before, synced commit %.3f s\n",
			recorded.Sub(r.start).Seconds(), cycle.Seconds(), b.records, b.evaluated.Sub(b.taken).Seconds(), b.advance.Seconds(),
			syncing.Sub(b.evaluated).Seconds(), recorded.Sub(syncing).Seconds())
	}
	if b.measured {
		r.res.Cycles = append(r.res.Cycles, cycle)
		r.res.Advances = append(r.res.Advances, b.advance)
		r.res.Syncs = append(r.res.Syncs, recorded.Sub(syncing))
	}
}

// record counts a violation recorded in the live phase: the delay of an
// injected trigger's, or an unexpected one.
func (r *LiveResult) record(v violation.Violation, injected map[string]time.Time, dueAfter time.Duration, recorded time.Time) {
	at, ok := injected[v.Key]
	if !ok || v.State != violation.Open {
		r.Unexpected = append(r.Unexpected, v.Rule+"/"+v.Key)
		return
	}
	delete(injected, v.Key)
	r.Delays = append(r.Delays, recorded.Sub(at.Add(dueAfter)))
}

// appendPayment appends a captured payment of the state benchmark's shape.
func appendPayment(buf []byte, id string, at time.Time) []byte {
	buf = append(buf, `{"event_id":"pe-`...)
	buf = append(buf, id...)
	buf = append(buf, `","payment_id":"pay-`...)
	buf = append(buf, id...)
	buf = append(buf, `","account_id":"acct-1","status":"captured","amount_cents":2500,"occurred_at":"`...)
	buf = at.UTC().AppendFormat(buf, time.RFC3339Nano)
	return append(buf, `"}`...)
}

// appendLedgerEntry appends the ledger entry of payment id, its idempotency
// key distinct from every other.
func appendLedgerEntry(buf []byte, id string, at time.Time) []byte {
	buf = append(buf, `{"entry_id":"le-`...)
	buf = append(buf, id...)
	buf = append(buf, `","idempotency_key":"ik-`...)
	buf = append(buf, id...)
	buf = append(buf, `","payment_id":"pay-`...)
	buf = append(buf, id...)
	buf = append(buf, `","account_id":"acct-1","amount_cents":2500,"direction":"credit","occurred_at":"`...)
	buf = at.UTC().AppendFormat(buf, time.RFC3339Nano)
	return append(buf, `"}`...)
}
