package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	"github.com/invmon/invmon/internal/violation"
)

// run applies events in the given order to one partition holding every
// example rule, with the clock at each event's time, then lets the clock run
// a month on so every deadline in the data is judged. It returns the final
// state of every violation by id.
func runEvents(t *testing.T, rs *rules.RuleSet, events []sim.Event) map[string]violation.State {
	t.Helper()
	snap := NewMemSnapshot()
	start := events[0].Time
	p, err := NewPartition(0, rs, snap, nil, nil, start)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range p.Topics() {
		p.SetCaughtUp(topic, true)
	}
	now := start
	for i, e := range events {
		if e.Time.After(now) {
			now = e.Time
		}
		rec := &Record{Topic: e.Topic, Offset: int64(i), Key: []byte(e.Key), Value: e.Value, Timestamp: e.Time}
		if err := p.Apply(rec, now); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if i%50 == 0 {
			p.Advance(now)
			snap.Apply(p.TakeDelta())
		}
	}
	for _, d := range []time.Duration{time.Minute, time.Hour, 48 * time.Hour, 31 * 24 * time.Hour} {
		p.Advance(now.Add(d))
	}
	out := map[string]violation.State{}
	for _, v := range p.Violations() {
		out[v.ID] = v.State
	}
	return out
}

// disorder returns the events with neighbours less than 2s apart swapped at
// random and some events delivered twice (the copy less than 2s later): the
// disorder that a 5s allowed lateness must absorb.
func disorder(events []sim.Event, rng *rand.Rand) []sim.Event {
	out := append([]sim.Event(nil), events...)
	for i := 1; i < len(out); i++ {
		if out[i].Time.Sub(out[i-1].Time) < 2*time.Second && rng.IntN(3) == 0 {
			out[i-1], out[i] = out[i], out[i-1]
		}
	}
	final := make([]sim.Event, 0, len(out)+len(out)/20)
	for i := 0; i < len(out); i++ {
		final = append(final, out[i])
		if rng.IntN(25) == 0 && i+1 < len(out) && out[i+1].Time.Sub(out[i].Time) < 2*time.Second {
			// Redelivered right after its neighbour.
			final = append(final, out[i+1], out[i])
			i++
		}
	}
	return final
}

// TestViolationsDoNotDependOnDeliveryOrder is the engine's property: for the
// same set of events, any delivery order within the allowed lateness and any
// redeliveries yield the same violations, with the same ids and states.
func TestViolationsDoNotDependOnDeliveryOrder(t *testing.T) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ds, err := sim.Generate("friday-rollback", seed, sim.Options{Payments: 1500})
			if err != nil {
				t.Fatal(err)
			}
			want := runEvents(t, rs, ds.Events)
			if len(want) == 0 {
				t.Fatal("the scenario produced no violations to compare")
			}
			for round := 0; round < 3; round++ {
				rng := rand.New(rand.NewPCG(seed, uint64(round)))
				got := runEvents(t, rs, disorder(ds.Events, rng))
				if len(got) != len(want) {
					t.Fatalf("round %d: %d violations, want %d", round, len(got), len(want))
				}
				for id, st := range want {
					if got[id] != st {
						t.Fatalf("round %d: violation %s is %q, want %q", round, id, got[id], st)
					}
				}
			}
		})
	}
}
