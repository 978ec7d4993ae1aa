package kafkaconn

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestEnsureTopicCreatesOnceAndLeavesAnExistingTopic(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	for i, want := range []bool{true, false} {
		created, err := EnsureTopic(ctx, adm, "g.changelog", 3, Compacted())
		if err != nil || created != want {
			t.Fatalf("call %d: created %v, err %v; want %v", i, created, err, want)
		}
	}
	// The second call asked for nothing different, but a call with other
	// settings must not change the existing topic either.
	if created, err := EnsureTopic(ctx, adm, "g.changelog", 6, nil); err != nil || created {
		t.Fatalf("created %v, err %v", created, err)
	}
	details, err := adm.ListTopics(ctx, "g.changelog")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(details["g.changelog"].Partitions); n != 3 {
		t.Fatalf("%d partitions, want 3", n)
	}
	cfgs, err := adm.DescribeTopicConfigs(ctx, "g.changelog")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cfgs.On("g.changelog", nil)
	if err != nil {
		t.Fatal(err)
	}
	policy := ""
	for _, cv := range rc.Configs {
		if cv.Key == "cleanup.policy" {
			policy = cv.MaybeValue()
		}
	}
	if policy != "compact" {
		t.Fatalf("cleanup.policy %q, want compact", policy)
	}
}
