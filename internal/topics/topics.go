// Package topics derives the Kafka topics a rule set reads and creates or
// checks them: `monitor topics create` and `monitor topics check`.
//
// Every topic one rule reads must have the same partition count (the
// monitor joins partition n of each); reference tables read only through
// lookups keep the latest value per key, so they are compacted.
package topics

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/invmon/invmon/internal/consumer"
	"github.com/invmon/invmon/internal/kafkaconn"
	"github.com/invmon/invmon/internal/rules"
)

// Topic is one topic the rules read.
type Topic struct {
	Name string
	// Compacted is true for a topic read only as a lookup (a reference
	// table such as accounts): it keeps each key's latest record forever.
	Compacted bool
	// Rules are the rules that read it.
	Rules []string
}

// Of returns the topics rs reads, sorted by name.
func Of(rs *rules.RuleSet) []Topic {
	byName := map[string]*Topic{}
	input := map[string]bool{}
	get := func(name string) *Topic {
		t := byName[name]
		if t == nil {
			t = &Topic{Name: name, Compacted: true}
			byName[name] = t
		}
		return t
	}
	for _, r := range rs.Rules {
		for _, s := range r.Inputs() {
			input[s.Topic] = true
		}
		seen := map[string]bool{}
		for _, s := range r.Streams() {
			t := get(s.Topic)
			if !seen[s.Topic] {
				seen[s.Topic] = true
				t.Rules = append(t.Rules, r.Name)
			}
		}
	}
	out := make([]Topic, 0, len(byName))
	for name, t := range byName {
		// A topic any rule reads as events must keep every event.
		t.Compacted = !input[name]
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Created is what Create did with one topic.
type Created struct {
	Topic
	// Existed is true when the topic was there already (and left alone);
	// Partitions is then its partition count.
	Existed    bool
	Partitions int
}

// Create creates every topic rs reads that does not exist, with partitions
// partitions and the given replication factor (-1: the broker's default),
// compacted for lookup tables. Existing topics are left as they are and
// reported; the co-partitioning verdict is Check's.
func Create(ctx context.Context, adm *kadm.Client, rs *rules.RuleSet, partitions int32, replication int16) ([]Created, error) {
	if partitions < 1 {
		return nil, fmt.Errorf("partitions must be at least 1, not %d", partitions)
	}
	var out []Created
	var errs []error
	for _, t := range Of(rs) {
		var configs map[string]*string
		if t.Compacted {
			configs = kafkaconn.Compacted()
		}
		created, err := kafkaconn.EnsureTopicReplicated(ctx, adm, t.Name, partitions, replication, configs)
		switch {
		case err != nil:
			errs = append(errs, err)
		case created:
			out = append(out, Created{Topic: t, Partitions: int(partitions)})
		default:
			c := Created{Topic: t, Existed: true}
			if details, derr := adm.ListTopics(ctx, t.Name); derr == nil {
				c.Partitions = len(details[t.Name].Partitions)
			}
			out = append(out, c)
		}
	}
	if err := awaitVisible(ctx, adm, out); err != nil {
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// awaitVisible waits until the metadata shows every created topic with its
// partitions: a broker answers CreateTopics before the metadata of every
// broker has caught up, and a check right after would call them missing.
// (The client caches metadata for its kgo.MetadataMinAge, 5s by default;
// the topics command lowers it.)
func awaitVisible(ctx context.Context, adm *kadm.Client, created []Created) error {
	var names []string
	for _, c := range created {
		if !c.Existed {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		details, err := adm.ListTopics(ctx, names...)
		visible := err == nil
		for _, c := range created {
			if d, ok := details[c.Name]; !c.Existed && (!ok || d.Err != nil || len(d.Partitions) != c.Partitions) {
				visible = false
			}
		}
		if visible {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("created topics %s are not visible in the metadata after 15s", strings.Join(names, ", "))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Verdict is what the monitor would conclude about the topics at startup.
type Verdict struct {
	// Topics are the rules' topics with their partition counts (0: missing).
	Topics []Described
	// Missing names topics that do not exist: the monitor starts and reads
	// them once they do.
	Missing []string
	// Err is the co-partitioning error that stops the monitor, or nil.
	Err error
}

// Described is a topic and its partition count on the cluster.
type Described struct {
	Topic
	Partitions int
}

// Check describes the rules' topics and applies the monitor's own
// start-up check (consumer.CheckCoPartitioned) to them.
func Check(ctx context.Context, adm *kadm.Client, rs *rules.RuleSet) (Verdict, error) {
	ts := Of(rs)
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return Verdict{}, fmt.Errorf("describe topics: %w", err)
	}
	var v Verdict
	for _, t := range ts {
		d := Described{Topic: t}
		if td, ok := details[t.Name]; ok && td.Err == nil {
			d.Partitions = len(td.Partitions)
		} else {
			v.Missing = append(v.Missing, t.Name)
		}
		v.Topics = append(v.Topics, d)
	}
	v.Err = consumer.CheckCoPartitioned(rs, details)
	return v, nil
}

// String is the verdict in words, one line per topic, then the conclusion.
func (v Verdict) String() string {
	var b strings.Builder
	for _, t := range v.Topics {
		kind := "events"
		if t.Compacted {
			kind = "lookup table, compacted"
		}
		count := fmt.Sprintf("%d partitions", t.Partitions)
		if t.Partitions == 0 {
			count = "missing"
		}
		fmt.Fprintf(&b, "%-16s %-16s %-24s read by %s\n", t.Name, count, "("+kind+")", strings.Join(t.Rules, ", "))
	}
	switch {
	case v.Err != nil:
		fmt.Fprintf(&b, "NOT co-partitioned: the monitor would refuse to start:\n%s\n", v.Err)
	case len(v.Missing) > 0:
		fmt.Fprintf(&b, "co-partitioned as far as they exist; missing: %s (the monitor starts and reads them once they exist; `monitor topics create` makes them)\n", strings.Join(v.Missing, ", "))
	default:
		b.WriteString("co-partitioned: every rule's topics have equal partition counts\n")
	}
	return b.String()
}
