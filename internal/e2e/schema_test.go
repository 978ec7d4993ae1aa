package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/invmon/invmon/internal/demo"
	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/monitor"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/sim"
	examplerules "github.com/invmon/invmon/rules"
)

// TestSchemaRegistryOutage stops the Schema Registry for 30 s mid-stream,
// while the second half of the incident is produced under schema versions
// the monitor has not fetched yet (each adds a field with a default, a
// BACKWARD-compatible change). The monitor must hold those records, not
// dead-letter or skip them, catch up once the registry is back, and still
// report exactly the ground truth.
func TestSchemaRegistryOutage(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	reg := kafkatest.StartSchemaRegistry(t)
	const outage = 30 * time.Second
	var (
		mu         sync.Mutex
		during     []string // what the monitor showed while the registry was down
		restartErr error
		total      int
		restarted  = make(chan struct{})
	)
	res, err := demo.Run(context.Background(), demo.Options{
		Scenario: "friday-rollback", Seed: 1, Payments: 8000, Partitions: 4,
		Brokers: kafkatest.Seeds(brokers), TopicPrefix: fmt.Sprintf("outage%d-", time.Now().UnixNano()),
		Timeout: 4 * time.Minute, Format: rules.FormatAvro, SchemaRegistry: reg.URL(),
		Midway: func(ctx context.Context, mid demo.Midway) error {
			for _, topic := range sim.Topics {
				if err := registerWithExtraField(ctx, mid, topic); err != nil {
					return err
				}
			}
			total = mid.Produced
			reg.Stop()
			go func() {
				defer close(restarted)
				for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(time.Second) {
					s := mid.Monitor.Stats()
					mu.Lock()
					during = append(during, fmt.Sprintf("records=%d dead_letters=%d waiting=%d", s.Records, s.DeadLetters, s.SchemaWaiting))
					mu.Unlock()
				}
				mu.Lock()
				restartErr = reg.Restart()
				mu.Unlock()
			}()
			return nil
		},
	})
	<-restarted
	if restartErr != nil {
		t.Fatal(restartErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	// While it was down: records held (some partitions waiting, the count
	// of records handled short of the total), none dead-lettered.
	last := during[len(during)-1]
	t.Logf("first half %d events, total %d; while the registry was down: %s … %s", total, res.Events, during[0], last)
	var records, dead, waiting int
	if _, err := fmt.Sscanf(last, "records=%d dead_letters=%d waiting=%d", &records, &dead, &waiting); err != nil {
		t.Fatal(err)
	}
	if waiting == 0 || records >= res.Events || dead != 0 {
		t.Errorf("at the end of the outage: %s; want partitions waiting, records held back, no dead letters", last)
	}
	if res.DeadLetters != 0 {
		t.Errorf("%d dead letters; a registry outage must never dead-letter", res.DeadLetters)
	}
	requireTruth(t, res)
}

// TestSchemaEvolution registers, mid-stream, a ledger schema with an added
// field (compatible: nothing may be lost or dead-lettered) and a payments
// schema without amount_cents, which three rules read: each must be
// reported broken by name (metric, log, InvariantRuleBroken alert) before
// the first record under that schema fails into the dead-letter topic.
func TestSchemaEvolution(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	reg := kafkatest.StartSchemaRegistry(t)
	hook := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanager(t, hook.URL())
	want := []string{"captured_payment_has_ledger_entry", "fulfilled_order_has_captured_payment", "payment_transitions_allowed"}
	var (
		mu       sync.Mutex
		problems []string
		seen     []string
		done     = make(chan struct{})
	)
	prefix := fmt.Sprintf("evolve%d-", time.Now().UnixNano())
	res, err := demo.Run(context.Background(), demo.Options{
		Scenario: "friday-rollback", Seed: 2, Payments: 4000, Partitions: 4,
		Brokers: kafkatest.Seeds(brokers), TopicPrefix: prefix, AlertmanagerURLs: []string{am.URL()},
		Timeout: 3 * time.Minute, Format: rules.FormatAvro, SchemaRegistry: reg.URL(),
		Midway: func(ctx context.Context, mid demo.Midway) error {
			if err := registerWithExtraField(ctx, mid, sim.TopicLedger); err != nil {
				return err
			}
			if err := registerWithout(ctx, mid, sim.TopicPayments, "amount_cents"); err != nil {
				return err
			}
			if got := mid.Monitor.BrokenRules(); len(got) != 0 {
				return fmt.Errorf("rules broken before any record under the new schema: %v", got)
			}
			// Watch the order of events: no dead letter may come before
			// the rules are reported broken.
			go func() {
				defer close(done)
				for end := time.Now().Add(90 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
					dead := mid.Monitor.Stats().DeadLetters
					broken := mid.Monitor.BrokenRules()
					mu.Lock()
					if dead > 0 && !slices.Equal(broken, want) {
						problems = append(problems, fmt.Sprintf("%d dead letters while the broken rules were %v", dead, broken))
					}
					if slices.Equal(broken, want) {
						seen = broken
						mu.Unlock()
						return
					}
					mu.Unlock()
				}
			}()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Error(problems[0])
	}
	if !slices.Equal(seen, want) {
		t.Errorf("broken rules reported: %v; want %v", seen, want)
	}
	// The alert names each broken rule.
	for _, r := range want {
		hook.WaitFor(t, 30*time.Second, func(a kafkatest.WebhookAlert) bool {
			return a.Status == "firing" && a.Labels["alertname"] == monitor.RuleBrokenAlert && a.Labels["rule"] == r
		})
	}
	// The ledger's compatible change lost nothing: its rule still equals the
	// truth, and no ledger record was dead-lettered.
	if s := res.Rules[sim.RuleNoDuplicateLedgerEffect]; s.Missed != 0 || s.FalsePositives != 0 || s.Found != s.Injected {
		t.Errorf("%s after the ledger's compatible change: %+v", sim.RuleNoDuplicateLedgerEffect, s)
	}
	reasons := deadLetterSources(t, brokers, res.DLQTopic)
	t.Logf("dead letters by source and reason: %v", reasons)
	for k := range reasons {
		if !strings.HasPrefix(k, prefix+sim.TopicPayments+" ") {
			t.Errorf("dead letter from %s: only payments under the breaking schema may fail", k)
		}
	}
}

// registerWithExtraField registers topic's example schema with one more
// field, optional with a default: a BACKWARD-compatible change.
func registerWithExtraField(ctx context.Context, mid demo.Midway, topic string) error {
	return registerEdited(ctx, mid, topic, func(fields []any) []any {
		return append(fields, map[string]any{"name": "note", "type": []any{"null", "string"}, "default": nil})
	})
}

// registerWithout registers topic's example schema without field: Avro
// calls removing a field BACKWARD-compatible, yet rules may read it.
func registerWithout(ctx context.Context, mid demo.Midway, topic, field string) error {
	return registerEdited(ctx, mid, topic, func(fields []any) []any {
		return slices.DeleteFunc(fields, func(f any) bool { return f.(map[string]any)["name"] == field })
	})
}

func registerEdited(ctx context.Context, mid demo.Midway, topic string, edit func([]any) []any) error {
	text, err := fsRead(topic + ".avsc")
	if err != nil {
		return err
	}
	var s map[string]any
	if err := json.Unmarshal(text, &s); err != nil {
		return err
	}
	s["fields"] = edit(s["fields"].([]any))
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	full := topicOf(mid, topic)
	_, err = mid.Encoder.Register(ctx, mid.Registry, full, full+"-value", sr.Schema{Schema: string(b), Type: sr.TypeAvro})
	return err
}

func fsRead(name string) ([]byte, error) {
	f, err := examplerules.Schemas().Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, st.Size())
	_, err = f.Read(b)
	return b, err
}

// topicOf returns the prefixed name of an example topic in this run.
func topicOf(mid demo.Midway, topic string) string {
	for _, s := range mid.Monitor.Rules().Streams {
		if strings.HasSuffix(s.Topic, "-"+topic) {
			return s.Topic
		}
	}
	return topic
}

// requireTruth fails unless every rule's violations equal the ground truth.
func requireTruth(t *testing.T, res *demo.Result) {
	t.Helper()
	names := make([]string, 0, len(res.Rules))
	for r := range res.Rules {
		names = append(names, r)
	}
	sort.Strings(names)
	for _, rule := range names {
		s := res.Rules[rule]
		t.Logf("%-42s injected %4d found %4d missed %d false %d dup %d", rule, s.Injected, s.Found, s.Missed, s.FalsePositives, s.Duplicates)
		if s.Missed != 0 || s.FalsePositives != 0 || s.Duplicates != 0 || s.Found != s.Injected || s.ResolvedFound != s.ResolvedExpected || s.Injected == 0 {
			t.Errorf("%s: %+v", rule, s)
		}
	}
}

// deadLetterSources reads the dead-letter topic and counts its records by
// "source-topic reason".
func deadLetterSources(t *testing.T, brokers, topic string) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkatest.Seeds(brokers)...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out
		}
		fs.EachRecord(func(r *kgo.Record) {
			var src, reason string
			for _, h := range r.Headers {
				switch h.Key {
				case "invmon.source.topic":
					src = string(h.Value)
				case "invmon.reason":
					reason = string(h.Value)
				}
			}
			out[src+" "+reason]++
		})
	}
}
