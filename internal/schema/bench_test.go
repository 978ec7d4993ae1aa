package schema

import (
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
	examplerules "github.com/invmon/invmon/rules"
)

// The per-event cost of each format: decode one payment and evaluate what
// every payment pays for in the example rules (id, key and time of the
// stream, the `status == "captured"` filter) plus one impact expression.
// The registry is not involved: its schema is in the cache, as it is after
// the first record. Run with
//
//	go test -run '^$' -bench Decode -benchmem ./internal/schema
func BenchmarkDecode(b *testing.B) {
	const value = `{"event_id":"p-000123-captured-1767225600000","idempotency_key":"idem-p-000123","payment_id":"p-000123",` +
		`"account_id":"acct-0042","status":"captured","amount_cents":129900,"currency":"USD","occurred_at":"2026-01-01T00:00:00.123Z"}`
	for _, format := range []string{rules.FormatJSON, rules.FormatAvro, rules.FormatProtobuf} {
		b.Run(format, func(b *testing.B) {
			src := strings.Replace(benchRules, "topic: payments", "topic: payments\n    format: "+format, 1)
			rs, err := rules.Parse([]string{"r.yaml"}, map[string][]byte{"r.yaml": []byte(src)})
			if err != nil {
				b.Fatal(err)
			}
			raw := []byte(value)
			if format != rules.FormatJSON {
				var f rules.ValueFormat
				raw, f = encodeForBench(b, format, value)
				if err := rs.BindFormats(map[string]rules.ValueFormat{format: f}); err != nil {
					b.Fatal(err)
				}
			}
			st, rule := rs.Streams["payments"], rs.Rules[0]
			dec := rules.NewDecoder(rs)
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				ev, err := dec.Decode("payments", 0, 0, nil, raw, time.Time{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := st.ID.Eval(ev); err != nil {
					b.Fatal(err)
				}
				if _, err := st.Key.Eval(ev); err != nil {
					b.Fatal(err)
				}
				if _, err := st.Time.Eval(ev); err != nil {
					b.Fatal(err)
				}
				if ok, err := rule.Unique.On.Condition.Eval(ev); err != nil || !ok {
					b.Fatal(ok, err)
				}
				if _, err := rule.Impact.Value.Eval(ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// encodeForBench encodes value as the registry-framed format with schema id
// 1 and returns it with a format whose cache already holds that schema.
func encodeForBench(b *testing.B, name, value string) ([]byte, rules.ValueFormat) {
	b.Helper()
	ext := map[string]string{rules.FormatAvro: ".avsc", rules.FormatProtobuf: ".proto"}[name]
	text, err := fs.ReadFile(examplerules.Schemas(), "payments"+ext)
	if err != nil {
		b.Fatal(err)
	}
	r := &Registry{cache: map[int]*cached{}, seen: map[topicID]bool{}}
	c := &cached{ready: make(chan struct{})}
	close(c.ready)
	enc := &Encoder{format: name, topics: map[string]*topicSchema{}}
	ts := &topicSchema{id: 1}
	switch name {
	case rules.FormatAvro:
		d, err := newAvro(string(text), nil)
		if err != nil {
			b.Fatal(err)
		}
		c.dec, ts.avro = d, d.record
	case rules.FormatProtobuf:
		d, err := newProtobuf(string(text), nil)
		if err != nil {
			b.Fatal(err)
		}
		c.dec = d
		if ts.proto, err = d.message(nil); err != nil {
			b.Fatal(err)
		}
	}
	r.cache[1] = c
	enc.topics["payments"] = ts
	raw, err := enc.Encode("payments", []byte(value))
	if err != nil {
		b.Fatal(err)
	}
	return raw, format{r, name}
}

const benchRules = `streams:
  payments:
    topic: payments
    id: event.event_id
    key: event.payment_id
    time: timestamp(event.occurred_at)
rules:
  - name: dup
    kind: unique
    window: 1m
    on: {stream: payments, if: event.status == "captured"}
    impact: {value: double(event.amount_cents) / 100.0, customer: event.account_id}
`
