package rules_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/rules"
)

// addFiles adds the files matching pattern to the seed corpus. The same files
// are also checked in under testdata/fuzz/FuzzParse, so that plain `go test`
// runs them even where the patterns change.
func addFiles(f *testing.F, pattern string) {
	f.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzParse feeds arbitrary bytes to the loader: it must never panic, and
// every failure must be located errors that an editor can jump to.
func FuzzParse(f *testing.F) {
	addFiles(f, "../../rules/*.yaml")
	addFiles(f, "testdata/*.yaml")
	f.Add([]byte("streams: {s: {topic: t, id: event.id, key: event.k, time: timestamp(event.t)}}\nrules: [{name: r, kind: absence, when: {stream: s, if: |\n    event.a &&\n      evnt.b}, expect: {stream: s}, within: 1s}]\n"))
	f.Add([]byte("rules:\n  - &r {name: a, kind: absence}\n  - *r\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		const name = "fuzz.yaml"
		rs, err := rules.Parse([]string{name}, map[string][]byte{name: src})
		if err == nil {
			if rs == nil {
				t.Fatal("nil rule set without error")
			}
			return
		}
		var es rules.Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error is not rules.Errors: %T %v", err, err)
		}
		lines := yamlLines(src)
		for _, e := range es {
			if e.Pos.File != name || e.Pos.Line < 1 || e.Pos.Column < 1 {
				t.Fatalf("bad position %+v in %q", e.Pos, e.Error())
			}
			if e.Pos.Line > lines {
				t.Fatalf("line %d past the end of a %d-line file: %q", e.Pos.Line, lines, e.Error())
			}
			_ = e.Error()
		}
	})
}

// yamlLines counts lines as YAML does: \r\n, \r and \n, and the Unicode
// breaks NEL, LS and PS, each end one.
func yamlLines(src []byte) int {
	s := strings.ReplaceAll(string(src), "\r\n", "\n")
	n := 1
	for _, r := range s {
		switch r {
		case '\n', '\r', '\u0085', '\u2028', '\u2029':
			n++
		}
	}
	return n
}

// FuzzEventExpr compiles the example rules and feeds fuzzed record values
// through a partition: evaluating every stream and rule expression on
// arbitrary JSON must never panic, a rejected record must be a
// *engine.DecodeError, and it must change no state. Each line of the input
// is one record; its first byte picks the topic.
func FuzzEventExpr(f *testing.F) {
	rs, err := rules.LoadFiles("../../rules/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	topicSet := map[string]bool{}
	for _, s := range rs.Streams {
		topicSet[s.Topic] = true
	}
	topics := make([]string, 0, len(topicSet))
	for t := range topicSet {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	pick := func(topic string) byte {
		for i, t := range topics {
			if t == topic {
				return byte(i)
			}
		}
		return 0
	}
	rec := func(topic, value string) []byte { return append([]byte{pick(topic)}, value...) }
	join := func(lines ...[]byte) []byte { return bytes.Join(lines, []byte("\n")) }
	f.Add(join(
		rec("payments", `{"event_id":"e1","payment_id":"p1","account_id":"a1","status":"captured","amount_cents":2500,"currency":"USD","occurred_at":"2026-01-01T00:00:00Z","idempotency_key":"k1"}`),
		rec("ledger", `{"entry_id":"l1","payment_id":"p1","account_id":"a1","amount_cents":2500,"direction":"credit","occurred_at":"2026-01-01T00:00:40Z","idempotency_key":"k1"}`),
	))
	f.Add(join(
		rec("payments", `{"event_id":"e1","payment_id":"p1","account_id":"a1","status":"authorized","amount_cents":1.5,"occurred_at":"2026-01-01T00:00:00.123456789+02:00"}`),
		rec("payments", `{"event_id":"e2","payment_id":"p1","account_id":"a1","status":"refunded","amount_cents":-1,"occurred_at":"2026-01-01T00:00:01Z"}`),
		rec("payments", `{"event_id":"e3","payment_id":"p1","account_id":"a1","status":"captured","amount_cents":1e400,"occurred_at":"2026-01-01T00:00:02Z"}`),
	))
	f.Add(join(
		rec("orders", `{"event_id":"o1","order_id":"o1","account_id":"a1","payment_id":"p1","status":"fulfilled","occurred_at":"2026-01-01T00:00:00Z"}`),
		rec("entitlements", `{"event_id":"s1","subscription_id":"s1","account_id":"a1","subscription_status":"active","entitlement_expires_at":"2025-12-31T00:00:00Z","occurred_at":"2026-01-01T00:00:00Z"}`),
		rec("accounts", `{"account_id":"a1","tier":"enterprise","mrr_cents":99900}`),
	))
	f.Add(rec("payments", `{"event_id":7,"payment_id":null,"status":["captured"],"amount_cents":{"v":1},"occurred_at":0}`))
	f.Add(rec("payments", `{"event_id":"e1","payment_id":"p1","status":"captured","amount_cents":"2500","occurred_at":"9999-12-31T23:59:59Z"}`))
	f.Add(rec("ledger", `[1,2,3]`))
	f.Add(rec("ledger", `{"entry_id":"\u0000","payment_id":"\ud800","occurred_at":"0001-01-01T00:00:00Z"}`))
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		snap := engine.NewMemSnapshot()
		p, err := engine.NewPartition(0, rs, snap, nil, nil, start)
		if err != nil {
			t.Fatal(err)
		}
		for _, topic := range topics {
			p.SetCaughtUp(topic, true)
		}
		now := start
		for i, line := range bytes.Split(data, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			topic := topics[int(line[0])%len(topics)]
			// Evaluate every stream expression directly too: the engine
			// stops at the first failing one, the fuzzer should not.
			if ev, err := rules.ParseEvent(topic, line[1:]); err == nil {
				for _, s := range rs.Streams {
					_, _ = s.ID.Eval(ev)
					_, _ = s.Key.Eval(ev)
					_, _ = s.Time.Eval(ev)
				}
				for _, r := range rs.Rules {
					if a := r.Absence; a != nil {
						_, _ = a.When.Condition.Eval(ev)
						_, _ = a.Expect.Condition.Eval(ev)
					}
					if x := r.Impact.Value; x != nil {
						_, _ = x.Eval(ev)
					}
					if x := r.Impact.Customer; x != nil {
						_, _ = x.Eval(ev)
					}
				}
			}
			now = now.Add(time.Second)
			err := p.Apply(&engine.Record{Topic: topic, Offset: int64(i), Value: line[1:], Timestamp: now}, now)
			d := p.TakeDelta()
			if err != nil {
				var de *engine.DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("record %d: error is not a *engine.DecodeError: %T %v", i, err, err)
				}
				if !d.Empty() {
					t.Fatalf("record %d was rejected (%v) but changed state: %+v", i, err, d)
				}
				continue
			}
			snap.Apply(d)
			p.Advance(now)
			snap.Apply(p.TakeDelta())
		}
		p.Advance(now.Add(time.Hour))
		snap.Apply(p.TakeDelta())
		// The state written must load back.
		if _, err := engine.NewPartition(0, rs, snap, nil, nil, now); err != nil {
			t.Fatalf("reload: %v", err)
		}
	})
}
