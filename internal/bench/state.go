package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/rules"
)

// stateRules are the two rules whose state the state benchmark grows: every
// ledger entry stays an entry of the unique rule for 24 hours of event time,
// and every captured payment's ledger entry is remembered for the absence
// rule's 15-minute redelivery window. The absence rule's within (%[1]s) and
// the streams' allowed lateness (%[2]s) come from LiveOptions.
const stateRules = `
streams:
  payments: {topic: payments, id: event.event_id, key: event.payment_id, time: timestamp(event.occurred_at), allowed_lateness: %[2]s}
  ledger: {topic: ledger, id: event.entry_id, key: event.payment_id, time: timestamp(event.occurred_at), allowed_lateness: %[2]s}
rules:
  - name: captured_payment_has_ledger_entry
    kind: absence
    when: {stream: payments, if: event.status == "captured"}
    expect: {stream: ledger}
    within: %[1]s
    redelivery_window: 15m
    impact: {value: double(event.amount_cents) / 100.0, customer: event.account_id}
  - name: no_duplicate_ledger_effect
    kind: unique
    on: {stream: ledger, key: event.idempotency_key}
    window: 24h
    impact: {value: double(event.amount_cents) / 100.0, customer: event.account_id}
`

// StateResult is what the state benchmark measured.
type StateResult struct {
	Events      int
	LiveEntries int64
	Elapsed     time.Duration
	// TailRate is the rate over the last tenth of the events, in events/s.
	TailRate  float64
	HeapInUse uint64
	GCShare   float64
	DiskBytes int64
	// Restart is the time from opening the state directory again to every
	// partition being ready (its engine made); FirstRecord the time from
	// then to the first record evaluated and durable.
	Restart, FirstRecord time.Duration
	// FillMem are the memory peaks of the fill, sampled every
	// MemSampleEvery; Mem those of the whole run (restart and live phase
	// included).
	FillMem, Mem MemPeaks
	// Live is the live phase's result; nil when it was skipped.
	Live *LiveResult
}

// MemSampleEvery is how often the state benchmark reads the process's memory.
const MemSampleEvery = 250 * time.Millisecond

// State drives the engine over Badger in this process, without Kafka: n
// events (a captured payment and its ledger entry, each entry's
// idempotency key distinct) over `partitions` partitions, committed in
// batches of `batch` events per partition with the applied offsets, as the
// consumer does: each batch's partitions evaluated in parallel, and the
// batch made durable while the next is evaluated. Event time advances 2 ms per payment, so up to 43 million
// entries stay inside the unique rule's 24-hour window: every entry is live.
// The fill's event time ends at the wall clock of its start, so the live
// phase (see live.go) goes on at wall time with every entry still in its
// window.
func State(dir string, n, partitions, batch int, cacheSize int64, progress io.Writer, live LiveOptions) (*StateResult, error) {
	live = live.withDefaults()
	rs, err := rules.Parse([]string{"state-bench.yaml"}, map[string][]byte{"state-bench.yaml": []byte(live.ruleText())})
	if err != nil {
		return nil, err
	}
	mem := StartMemSampler(MemSampleEvery)
	defer mem.Stop()
	store, err := joinstate.Open(dir, joinstate.Options{CacheSize: cacheSize}, nil)
	if err != nil {
		return nil, err
	}
	mem.ListTables(store.TableIDs)
	t0 := time.Now().UTC().Add(-time.Duration(n) * time.Millisecond)
	parts := make([]*engine.Partition, partitions)
	for i := range parts {
		if parts[i], err = engine.NewPartition(int32(i), rs, store.Snapshot(int32(i)), nil, nil, t0); err != nil {
			return nil, err
		}
	}
	gcBefore := gcSeconds()
	start := time.Now()
	offsets := make([]int64, partitions)
	pairs := (n + 1) / 2
	perBatch := max(batch*partitions/2, 1)
	// As the consumer does: each batch's partitions are evaluated in
	// parallel, one goroutine each, and the batch is made durable by one
	// committer goroutine, in order, while the next batch is evaluated.
	commits := make(chan []joinstate.PartitionDelta, 1)
	committed := make(chan error, 1)
	go func() {
		var err error
		for pds := range commits {
			if err == nil {
				err = store.Commit(pds...)
			}
		}
		committed <- err
	}()
	errs := make([]error, partitions)
	deltas := make([]*engine.Delta, partitions)
	var commitErr error
	// The last tenth of the fill is timed apart: the rate with the state
	// nearly full, which the live phase is paced by.
	tailFrom, tailStart := 0, time.Time{}
	for lo := 0; lo < pairs && commitErr == nil; lo += perBatch {
		hi := min(lo+perBatch, pairs)
		now := t0.Add(time.Duration(hi-1) * 2 * time.Millisecond)
		final := hi == pairs
		if final {
			now = t0.Add(time.Duration(n) * time.Millisecond)
		}
		var wg sync.WaitGroup
		for p := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[p] = statePairs(parts[p], int32(p), partitions, lo, hi, t0, &offsets[p])
				if errs[p] == nil {
					parts[p].Advance(now)
					errs[p] = parts[p].Err()
				}
				deltas[p] = parts[p].TakeDelta()
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			close(commits)
			<-committed
			return nil, err
		}
		pds := make([]joinstate.PartitionDelta, partitions)
		for p := range parts {
			pds[p] = joinstate.PartitionDelta{Partition: int32(p), Delta: deltas[p],
				Offsets: map[string]int64{"payments": offsets[p], "ledger": offsets[p]}}
		}
		select {
		case commitErr = <-committed:
		case commits <- pds:
		}
		if tailFrom == 0 && 2*hi >= n-n/10 {
			tailFrom, tailStart = 2*hi, time.Now()
		}
		if progress != nil && hi/500_000 != lo/500_000 {
			fmt.Fprintf(progress, "bench --state: %d events, %.0f events/s\n", 2*hi, float64(2*hi)/time.Since(start).Seconds())
		}
	}
	close(commits)
	if err := <-committed; err != nil {
		return nil, err
	}
	if commitErr != nil {
		return nil, commitErr
	}
	events := 2 * pairs
	res := &StateResult{Events: events, Elapsed: time.Since(start)}
	res.TailRate = float64(events-tailFrom) / time.Since(tailStart).Seconds()
	res.GCShare = (gcSeconds() - gcBefore) / (res.Elapsed.Seconds() * float64(runtime.GOMAXPROCS(0)))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapInUse = ms.HeapInuse
	for _, p := range parts {
		res.LiveEntries += p.Live()
	}
	res.FillMem = mem.Peaks()
	mem.ListTables(nil)
	if err := store.Close(); err != nil {
		return nil, err
	}
	res.DiskBytes = dirSize(dir)

	// Restart: open the directory again and make every partition's engine,
	// as an assignment does; then one more record, evaluated and durable.
	start = time.Now()
	if store, err = joinstate.Open(dir, joinstate.Options{CacheSize: cacheSize}, nil); err != nil {
		return nil, err
	}
	mem.ListTables(store.TableIDs)
	defer func() {
		mem.ListTables(nil)
		store.Close()
	}()
	now := t0.Add(time.Duration(n) * time.Millisecond)
	for i := range parts {
		if _, err := store.AppliedOffset("payments", int32(i)); err != nil {
			return nil, err
		}
		if parts[i], err = engine.NewPartition(int32(i), rs, store.Snapshot(int32(i)), nil, nil, now); err != nil {
			return nil, err
		}
	}
	res.Restart = time.Since(start)
	start = time.Now()
	offsets[0]++
	rec := &engine.Record{Topic: "ledger", Offset: offsets[0],
		Value: []byte(`{"entry_id":"le-again","idempotency_key":"ik-0","payment_id":"pay-0","account_id":"acct-1","amount_cents":2500,"occurred_at":"` + t0.Add(time.Second).Format(time.RFC3339Nano) + `"}`)}
	if err := parts[0].Apply(rec, now); err != nil {
		return nil, err
	}
	if err := store.Commit(joinstate.PartitionDelta{Partition: 0, Delta: parts[0].TakeDelta()}); err != nil {
		return nil, err
	}
	res.FirstRecord = time.Since(start)
	if live.Duration > 0 {
		if res.Live, err = runLive(store, parts, offsets, res.TailRate, live, progress); err != nil {
			return nil, err
		}
	}
	res.Mem = mem.Peaks()
	return res, nil
}

// statePairs applies to partition p (of partitions) its share of the pairs
// [lo, hi): pair i, on partition i mod partitions, is a captured payment and
// its ledger entry at t0 + 2 ms × i.
func statePairs(part *engine.Partition, p int32, partitions, lo, hi int, t0 time.Time, offset *int64) error {
	var buf []byte
	first := lo + (int(p)-lo%partitions+partitions)%partitions
	for i := first; i < hi; i += partitions {
		at := t0.Add(time.Duration(i) * 2 * time.Millisecond)
		id := strconv.Itoa(i)
		buf = appendPayment(buf[:0], id, at)
		*offset++
		if err := part.Apply(&engine.Record{Topic: "payments", Partition: p, Offset: *offset, Value: buf}, at); err != nil {
			return err
		}
		buf = appendLedgerEntry(buf[:0], id, at)
		if err := part.Apply(&engine.Record{Topic: "ledger", Partition: p, Offset: *offset, Value: buf}, at); err != nil {
			return err
		}
	}
	return nil
}

func gcSeconds() float64 {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64 {
		return 0
	}
	return s[0].Value.Float64()
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}
