package topics

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/invmon/invmon/internal/rules"
	examplerules "github.com/invmon/invmon/rules"
)

func exampleRules(t *testing.T) *rules.RuleSet {
	t.Helper()
	names, sources, err := examplerules.Files()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Parse(names, sources)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func admin(t *testing.T) *kadm.Client {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func TestTopicsOfTheExampleRules(t *testing.T) {
	var got []string
	for _, tp := range Of(exampleRules(t)) {
		s := tp.Name
		if tp.Compacted {
			s += " (compacted)"
		}
		got = append(got, s)
	}
	want := "accounts (compacted), entitlements, ledger, orders, payments"
	if strings.Join(got, ", ") != want {
		t.Errorf("topics = %s, want %s", strings.Join(got, ", "), want)
	}
}

// Create makes every topic with equal partitions and compacts the lookup
// table; Check then reaches the monitor's verdict, and names the topics
// when one of them is changed behind its back.
func TestCreateThenCheck(t *testing.T) {
	ctx := context.Background()
	adm, rs := admin(t), exampleRules(t)

	v, err := Check(ctx, adm, rs)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Missing) != 5 || v.Err != nil || !strings.Contains(v.String(), "missing: accounts, entitlements, ledger, orders, payments") {
		t.Errorf("before create: %+v\n%s", v, v)
	}

	created, err := Create(ctx, adm, rs, 6, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 5 {
		t.Fatalf("created %+v", created)
	}
	details, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range created {
		if c.Existed || len(details[c.Name].Partitions) != 6 {
			t.Errorf("%s: existed %v, %d partitions, want created with 6", c.Name, c.Existed, len(details[c.Name].Partitions))
		}
	}
	cfgs, err := adm.DescribeTopicConfigs(ctx, "accounts", "payments")
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range cfgs {
		policy := ""
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" {
				policy = c.MaybeValue()
			}
		}
		if want := map[string]string{"accounts": "compact", "payments": "delete"}[rc.Name]; policy != want {
			t.Errorf("%s cleanup.policy = %q, want %q", rc.Name, policy, want)
		}
	}
	if v, err = Check(ctx, adm, rs); err != nil || v.Err != nil || len(v.Missing) > 0 {
		t.Fatalf("after create: %v %+v", err, v)
	}
	if !strings.Contains(v.String(), "co-partitioned: every rule's topics have equal partition counts") {
		t.Errorf("verdict:\n%s", v)
	}

	// Created again: nothing changes, each is reported as existing.
	again, err := Create(ctx, adm, rs, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range again {
		if !c.Existed || c.Partitions != 6 {
			t.Errorf("second create of %s: %+v, want existing with 6 partitions", c.Name, c)
		}
	}

	// The ledger grows a partition: the rules joining it with payments break.
	if _, err := adm.CreatePartitions(ctx, 1, "ledger"); err != nil {
		t.Fatal(err)
	}
	if v, err = Check(ctx, adm, rs); err != nil {
		t.Fatal(err)
	}
	if v.Err == nil || !strings.Contains(v.Err.Error(), "ledger has 7") || !strings.Contains(v.String(), "NOT co-partitioned") {
		t.Errorf("after the ledger grew: %v\n%s", v.Err, v)
	}
}
