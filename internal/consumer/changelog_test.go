package consumer

import (
	"bytes"
	"context"
	"maps"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/statekey"
)

// TestChangelogRecordsAreNotChangedByLaterBatches: changelog records share
// their values with the delta and their keys with one buffer (see
// changelogRecords). What a batch hands the producer must stay what it was
// while the engine goes on writing the same keys in the next batches, and a
// key grown in place must not run into the next key.
func TestChangelogRecordsAreNotChangedByLaterBatches(t *testing.T) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := sim.Generate("friday-rollback", 1, sim.Options{Payments: 300})
	if err != nil {
		t.Fatal(err)
	}
	snap := engine.NewMemSnapshot()
	start := ds.Events[0].Time
	p, err := engine.NewPartition(0, rs, snap, nil, nil, start)
	if err != nil {
		t.Fatal(err)
	}
	c := &Consumer{changelogName: "g.changelog"}
	type rec struct{ key, value []byte }
	var produced [][]*kgo.Record
	var want [][]rec
	now := start
	for i, e := range ds.Events {
		if e.Time.After(now) {
			now = e.Time
		}
		if err := p.Apply(&engine.Record{Topic: e.Topic, Offset: int64(i), Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}, now); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if i%200 != 199 && i != len(ds.Events)-1 {
			continue
		}
		p.Advance(now)
		d := p.TakeDelta()
		out := c.changelogRecords(0, d, map[string]int64{e.Topic: int64(i)})
		copies := make([]rec, len(out))
		for j, r := range out {
			copies[j] = rec{bytes.Clone(r.Key), bytes.Clone(r.Value)}
			if r.Topic != "g.changelog" || r.Partition != 0 {
				t.Fatalf("record %d goes to %s[%d]", j, r.Topic, r.Partition)
			}
			if op, ok := d.Ops[string(r.Key)]; ok && !op.Delete && r.Value == nil {
				t.Fatalf("state entry %q has a nil value: a tombstone", r.Key)
			}
		}
		// Grow every key in place: with its capacity bounded it is copied
		// instead of overwriting its neighbour in the shared buffer.
		for _, r := range out {
			_ = append(r.Key, 0xff, 0xff)
		}
		for j, r := range out {
			if !bytes.Equal(r.Key, copies[j].key) {
				t.Fatalf("key %q changed to %q by a neighbour's append", copies[j].key, r.Key)
			}
		}
		snap.Apply(d)
		produced, want = append(produced, out), append(want, copies)
	}
	if len(produced) < 3 {
		t.Fatalf("only %d batches: the workload is too small to rewrite keys", len(produced))
	}
	for b := range produced {
		for j, r := range produced[b] {
			if !bytes.Equal(r.Key, want[b][j].key) || !bytes.Equal(r.Value, want[b][j].value) ||
				(r.Value == nil) != (want[b][j].value == nil) {
				t.Fatalf("batch %d record %d changed after it was handed over: %q=%q, was %q=%q",
					b, j, r.Key, r.Value, want[b][j].key, want[b][j].value)
			}
		}
	}
}

// TestChangelogRestoresExactlyTheLocalState runs the five example rules with
// the changelog on, then restores each partition from the changelog into a
// fresh store: it must hold exactly the keys and values of the member's own
// state. The changelog's values are the very slices Badger was given, so
// this checks that sharing them changed neither copy.
func TestChangelogRestoresExactlyTheLocalState(t *testing.T) {
	topics := []string{"payments", "ledger", "orders", "entitlements", "accounts"}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	brokers := cluster.ListenAddrs()
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := sim.Generate("friday-rollback", 2, sim.Options{Payments: 400})
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]*kgo.Record, len(ds.Events))
	for i, e := range ds.Events {
		recs[i] = &kgo.Record{Topic: e.Topic, Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	store := openStore(t)
	cfg := Config{Brokers: brokers, Group: "exact", TickInterval: 20 * time.Millisecond, Changelog: true, MaxPollRecords: 150}
	c, err := New(context.Background(), cfg, rs, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, c, func(s Stats) bool { return s.CaughtUp && s.Durable && s.Records == int64(len(recs)) })
	c.Close()

	ends, err := kadm.NewClient(mustClient(t, brokers)).ListEndOffsets(context.Background(), "exact.changelog")
	if err != nil {
		t.Fatal(err)
	}
	for p := int32(0); p < 2; p++ {
		end, ok := ends.Lookup("exact.changelog", p)
		if !ok || end.Err != nil || end.Offset == 0 {
			t.Fatalf("changelog partition %d: %+v", p, end)
		}
		restored := openStore(t)
		if _, _, err := Restore(context.Background(), brokers, nil, "exact.changelog", p, end.Offset, restored, topics, nil); err != nil {
			t.Fatal(err)
		}
		got, want := partitionState(t, restored, p), partitionState(t, store, p)
		if len(want) < 100 {
			t.Fatalf("partition %d keeps only %d keys: the workload is too small", p, len(want))
		}
		if !maps.EqualFunc(got, want, bytes.Equal) {
			for k, v := range want {
				if g, ok := got[k]; !ok || !bytes.Equal(g, v) {
					t.Errorf("partition %d key %q: restored %q (present %v), local %q", p, k, g, ok, v)
				}
			}
			t.Fatalf("partition %d: restored %d keys, local %d", p, len(got), len(want))
		}
		for _, topic := range topics {
			a, _ := store.AppliedOffset(topic, p)
			b, _ := restored.AppliedOffset(topic, p)
			if a != b {
				t.Fatalf("partition %d: applied offset of %s restored as %d, local %d", p, topic, b, a)
			}
		}
	}
}

// partitionState returns every key and value of partition p's state.
func partitionState(t *testing.T, store *joinstate.Store, p int32) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	snap := store.Snapshot(p)
	for _, typ := range statekey.Types {
		if err := snap.Scan(typ, "", func(k string, v []byte) bool {
			out[k] = bytes.Clone(v)
			return true
		}); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok := snap.(engine.ViewSnapshot); ok {
		v.Release()
	}
	return out
}

func mustClient(t *testing.T, brokers []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
