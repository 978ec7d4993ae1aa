package schema_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/schema"
	examplerules "github.com/invmon/invmon/rules"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

const payment = `{"event_id":"e1","idempotency_key":"i1","payment_id":"p1","account_id":"a1","status":"captured",` +
	`"amount_cents":2500,"currency":"USD","occurred_at":"2026-01-01T00:00:01.5Z"}`

// One registry serves every subtest: it takes seconds to start.
func TestRegistry(t *testing.T) {
	reg := kafkatest.StartSchemaRegistry(t)
	ctx := context.Background()
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}

	for _, format := range []string{rules.FormatAvro, rules.FormatProtobuf} {
		t.Run("decode "+format, func(t *testing.T) {
			enc, err := schema.RegisterSchemas(ctx, cl, format, examplerules.Schemas(), format+"-", "payments")
			if err != nil {
				t.Fatal(err)
			}
			value, err := enc.Encode(format+"-payments", []byte(payment))
			if err != nil {
				t.Fatal(err)
			}
			r, err := schema.New(schema.Config{URLs: []string{reg.URL()}})
			if err != nil {
				t.Fatal(err)
			}
			ev, err := rules.NewEvent(format+"-payments", value, r.Formats()[format])
			if err != nil {
				t.Fatal(err)
			}
			f := ev.Fields()
			if s, ok := f.StringField("status"); !ok || s != "captured" {
				t.Errorf("status = %q, %v; want the enum's name captured", s, ok)
			}
			if s, ok := f.TextField("payment_id"); !ok || s != "p1" {
				t.Errorf("payment_id = %q, %v", s, ok)
			}
			want := time.Date(2026, 1, 1, 0, 0, 1, 500_000_000, time.UTC)
			if ts, err := f.TimeField("occurred_at"); err != nil || !ts.Equal(want) {
				t.Errorf("occurred_at = %v, %v; want %v", ts, err, want)
			}
			// The same expressions as for JSON, compiled from a rule file.
			rs, err := rules.Parse([]string{"r.yaml"}, map[string][]byte{"r.yaml": []byte(ruleFile(format, "event.amount_cents > 2000 && event.status == \"captured\""))})
			if err != nil {
				t.Fatal(err)
			}
			if err := rs.BindFormats(r.Formats()); err != nil {
				t.Fatal(err)
			}
			ok, err := rs.Rules[0].Unique.On.Condition.Eval(ev)
			if err != nil || !ok {
				t.Errorf("condition = %v, %v; want true", ok, err)
			}
			v, err := rs.Rules[0].Impact.Value.Eval(ev)
			if err != nil || v != 25 {
				t.Errorf("impact = %v, %v; want 25", v, err)
			}
			if errs, err := r.TypeCheck(ctx, rs); err != nil || len(errs) > 0 {
				t.Errorf("type check of a correct rule: %v, %v", errs, err)
			}
		})

		t.Run("type check "+format, func(t *testing.T) {
			r, err := schema.New(schema.Config{URLs: []string{reg.URL()}})
			if err != nil {
				t.Fatal(err)
			}
			for cond, want := range map[string]string{
				`event.amout_cents > 10`:    `r.yaml:15:16: rule "dup": on.if: undefined field 'amout_cents'`,
				`event.amount_cents == "x"`: `r.yaml:15:30: rule "dup": on.if: found no matching overload for '_==_' applied to '(int, string)'`,
			} {
				rs, err := rules.Parse([]string{"r.yaml"}, map[string][]byte{"r.yaml": []byte(ruleFile(format, cond))})
				if err != nil {
					t.Fatal(err)
				}
				errs, err := r.TypeCheck(ctx, rs)
				if err != nil {
					t.Fatal(err)
				}
				if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), want) {
					t.Errorf("%s: got %v\nwant %s", cond, errs, want)
				}
				if got := rs.BrokenRules(errs); len(got) != 1 || got[0] != "dup" {
					t.Errorf("broken rules = %v", got)
				}
			}
		})
	}

	t.Run("unknown schema id is poison", func(t *testing.T) {
		r, err := schema.New(schema.Config{URLs: []string{reg.URL()}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Formats()[rules.FormatAvro].DecodeValue("payments", []byte{0, 0, 0, 0x7f, 0x7f, 2})
		var pe *schema.PoisonError
		if !errors.As(err, &pe) || pe.Reason() != schema.ReasonUnknownSchema {
			t.Errorf("got %v; want a poison error %s", err, schema.ReasonUnknownSchema)
		}
		_, err = r.Formats()[rules.FormatAvro].DecodeValue("payments", []byte(payment))
		if !errors.As(err, &pe) || pe.Reason() != schema.ReasonBadMagic {
			t.Errorf("JSON in an avro stream: got %v; want %s", err, schema.ReasonBadMagic)
		}
	})

	t.Run("registry down is not poison", func(t *testing.T) {
		enc, err := schema.RegisterSchemas(ctx, cl, rules.FormatAvro, examplerules.Schemas(), "", "ledger")
		if err != nil {
			t.Fatal(err)
		}
		value, err := enc.Encode("ledger", []byte(`{"entry_id":"l1","idempotency_key":"i1","payment_id":"p1","account_id":"a1",`+
			`"amount_cents":5,"direction":"credit","occurred_at":"2026-01-01T00:00:00Z"}`))
		if err != nil {
			t.Fatal(err)
		}
		r, err := schema.New(schema.Config{URLs: []string{reg.URL()}})
		if err != nil {
			t.Fatal(err)
		}
		reg.Stop()
		_, err = r.Formats()[rules.FormatAvro].DecodeValue("ledger", value)
		if !errors.Is(err, rules.ErrSchemaUnavailable) {
			t.Errorf("registry stopped: got %v; want ErrSchemaUnavailable", err)
		}
		reg.Start()
		if _, err := r.Formats()[rules.FormatAvro].DecodeValue("ledger", value); err != nil {
			t.Errorf("registry back: %v", err)
		}

		// A schema fetched once is kept on disk: a restarted monitor decodes
		// what its state holds while the registry is down.
		dir := t.TempDir()
		first, err := schema.New(schema.Config{URLs: []string{reg.URL()}, CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := first.Formats()[rules.FormatAvro].DecodeValue("ledger", value); err != nil {
			t.Fatal(err)
		}
		reg.Stop()
		defer reg.Start()
		restarted, err := schema.New(schema.Config{URLs: []string{reg.URL()}, CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := restarted.Formats()[rules.FormatAvro].DecodeValue("ledger", value); err != nil {
			t.Errorf("registry down, schema on disk: %v", err)
		}
		uncached, err := schema.New(schema.Config{URLs: []string{reg.URL()}, CacheDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := uncached.Formats()[rules.FormatAvro].DecodeValue("ledger", value); !errors.Is(err, rules.ErrSchemaUnavailable) {
			t.Errorf("registry down, nothing on disk: got %v; want ErrSchemaUnavailable", err)
		}
	})
}

// ruleFile is a unique rule on payments in format whose condition is cond
// (on line 15, column 11), reading topic format-payments.
func ruleFile(format, cond string) string {
	return `streams:
  payments:
    topic: ` + format + `-payments
    format: ` + format + `
    id: event.event_id
    key: event.payment_id
    time: timestamp(event.occurred_at)

rules:
  - name: dup
    kind: unique
    window: 1m
    on:
      stream: payments
      if: ` + cond + `
    impact:
      value: double(event.amount_cents) / 100.0
      customer: event.account_id
`
}
