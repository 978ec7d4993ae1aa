package engine

import (
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"
)

// fuzzTopics are the example rules' topics, plus one no rule reads.
var fuzzTopics = []string{"payments", "ledger", "orders", "entitlements", "accounts", "unread"}

// FuzzApply drives the whole record path (decode, time validation, CEL,
// state changes, deadlines, the state's encoding and reload) with arbitrary
// key and value bytes against every example rule. No input may panic; every
// rejection is a DecodeError; and a partition reloaded from the state the
// record produced holds exactly the violations and pending expectations it
// held before: keys are byte-exact through state.
func FuzzApply(f *testing.F) {
	for _, c := range hostileRecords() {
		topic := byte(0)
		for i, t := range fuzzTopics {
			if t == c.topic {
				topic = byte(i)
			}
		}
		var ts int64
		if !c.ts.IsZero() {
			ts = c.ts.UnixMilli()
		}
		f.Add(topic, c.key, []byte(c.value), ts)
	}
	rs := exampleRules(f)
	t0 := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, topic byte, key, value []byte, tsMillis int64) {
		snap := NewMemSnapshot()
		p, err := NewPartition(0, rs, snap, nil, nil, t0)
		if err != nil {
			t.Fatal(err)
		}
		ts := t0
		if tsMillis != 0 {
			ts = time.UnixMilli(tsMillis)
		}
		rec := &Record{Topic: fuzzTopics[int(topic)%len(fuzzTopics)], Offset: 1, Key: key, Value: value, Timestamp: ts}
		if err := p.Apply(rec, t0); err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("rejection is %T (%v), want *DecodeError", err, err)
			}
		}
		snap.Apply(p.TakeDelta())
		// A trigger's deadline may lie anywhere in the accepted range: walk
		// the clock far enough that every one is judged.
		for _, topic := range p.Topics() {
			p.SetCaughtUp(topic, true)
		}
		for _, d := range []time.Duration{time.Hour, 48 * time.Hour} {
			p.Advance(t0.Add(d))
			snap.Apply(p.TakeDelta())
		}
		q, err := NewPartition(0, rs, snap, nil, nil, t0)
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
		if a, b := summary(p), summary(q); a != b {
			t.Fatalf("state changed through a reload:\n before %s\n after  %s", a, b)
		}
	})
}

// summary renders what a partition holds, for comparison across a reload.
func summary(p *Partition) string {
	vs := p.Violations()
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%s/%q/%s/%q/%v", v.Rule, v.Key, v.State, v.Customer, v.Impact))
	}
	sort.Strings(out)
	return fmt.Sprintf("violations %v pending %d", out, p.PendingCount())
}
