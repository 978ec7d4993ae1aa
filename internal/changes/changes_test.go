package changes

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/violation"
)

// recorder is a Subscriber that keeps what it was given.
type recorder struct {
	mu       sync.Mutex
	seeded   bool
	seed     []string
	observed []string
}

func (r *recorder) Seed(open []violation.Violation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seeded = true
	for _, v := range open {
		r.seed = append(r.seed, v.ID)
	}
}

func (r *recorder) Observe(vs ...violation.Violation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range vs {
		r.observed = append(r.observed, v.ID+":"+string(v.State))
	}
}

// TestFollowSeedsTheGroupsOpenViolationsThenObservesInOrder: what the topic
// held at the start reaches every subscriber once, as the latest state per
// violation with only the open ones kept; what comes after is observed in
// topic order.
func TestFollowSeedsTheGroupsOpenViolationsThenObservesInOrder(t *testing.T) {
	const group = "g"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx := context.Background()
	if err := EnsureTopic(ctx, kadm.NewClient(cl), group); err != nil {
		t.Fatal(err)
	}
	produce := func(vs ...violation.Violation) {
		t.Helper()
		recs, err := Records(group, vs)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	open := func(id string) violation.Violation {
		return violation.Violation{ID: id, Rule: "r", State: violation.Open}
	}
	resolved := func(id string) violation.Violation {
		return violation.Violation{ID: id, Rule: "r", State: violation.Resolved}
	}
	// Before the follower starts: a stays open, b opened and resolved.
	produce(open("a"), open("b"), resolved("b"))

	subs := []*recorder{{}, {}}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Follow(fctx, cluster.ListenAddrs(), nil, group, zap.NewNop(), subs[0], subs[1]) }()
	waitFor := func(what string, cond func(r *recorder) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for _, r := range subs {
			for {
				r.mu.Lock()
				ok := cond(r)
				r.mu.Unlock()
				if ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: seed %v, observed %v", what, r.seed, r.observed)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	waitFor("seed", func(r *recorder) bool { return r.seeded })
	produce(resolved("a"), open("c"))
	waitFor("later changes", func(r *recorder) bool { return len(r.observed) == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, r := range subs {
		if len(r.seed) != 1 || r.seed[0] != "a" {
			t.Errorf("subscriber %d seeded with %v, want [a]", i, r.seed)
		}
		if r.observed[0] != "a:resolved" || r.observed[1] != "c:open" {
			t.Errorf("subscriber %d observed %v, want [a:resolved c:open]", i, r.observed)
		}
	}
}
