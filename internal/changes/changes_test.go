package changes

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/violation"
)

// recorder is a Subscriber that keeps what it was told.
type recorder struct {
	mu       sync.Mutex
	caughtUp bool
	observed []string
}

func (r *recorder) CaughtUp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.caughtUp = true
}

func (r *recorder) Observe(vs ...violation.Violation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range vs {
		r.observed = append(r.observed, v.ID+":"+string(v.State))
	}
}

func openIn(t *testing.T, g *joinstate.GroupView) []string {
	t.Helper()
	var ids []string
	if err := g.EachOpen("r", func(v *violation.Violation) error {
		ids = append(ids, v.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// TestFollowKeepsTheGroupViewAndResumes: what the topic held at the start
// is in the group view when the subscribers are told it caught up; later
// changes reach the view and then the subscribers, in topic order, a
// duplicate left out; a second follower over the same view resumes where
// the first stopped and tells nothing again.
func TestFollowKeepsTheGroupViewAndResumes(t *testing.T) {
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
	store, err := joinstate.Open(t.TempDir(), joinstate.Options{InMemory: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	view := store.GroupView()
	// Before the follower starts: a stays open, b opened and resolved.
	produce(open("a"), open("b"), resolved("b"))

	follow := func(r *recorder) func() {
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- Follow(fctx, FollowConfig{Brokers: cluster.ListenAddrs(), Group: group, View: view, Subscribers: []Subscriber{r}, Log: zap.NewNop()})
		}()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor := func(r *recorder, what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r.mu.Lock()
			ok := cond()
			r.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: caught up %v, observed %v", what, r.caughtUp, r.observed)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	r := &recorder{}
	stop := follow(r)
	waitFor(r, "caught up", func() bool { return r.caughtUp })
	if got := openIn(t, view); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("open in the view when caught up: %v, want [a]", got)
	}
	produce(resolved("a"), open("c"), open("c"))
	waitFor(r, "later changes", func() bool { return len(r.observed) >= 5 })
	stop()
	if got := strings.Join(r.observed, " "); got != "a:open b:open b:resolved a:resolved c:open" {
		t.Fatalf("observed %s, want every change once in topic order", got)
	}
	if got := openIn(t, view); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("open in the view: %v, want [c]", got)
	}

	// Resumed: nothing read again, caught up at once, a new change told.
	r2 := &recorder{}
	stop = follow(r2)
	waitFor(r2, "caught up after resume", func() bool { return r2.caughtUp })
	produce(resolved("c"))
	waitFor(r2, "change after resume", func() bool { return len(r2.observed) >= 1 })
	stop()
	if got := strings.Join(r2.observed, " "); got != "c:resolved" {
		t.Fatalf("after resume observed %s, want only c:resolved", got)
	}
}
