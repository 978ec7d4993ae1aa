package engine

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/violation"
	examplerules "github.com/invmon/invmon/rules"
)

var (
	exampleOnce sync.Once
	exampleSet  *rules.RuleSet
	exampleErr  error
)

// exampleRules compiles every example rule file once per test binary.
func exampleRules(tb testing.TB) *rules.RuleSet {
	tb.Helper()
	exampleOnce.Do(func() {
		names, src, err := examplerules.Files()
		if err != nil {
			exampleErr = err
			return
		}
		exampleSet, exampleErr = rules.Parse(names, src)
	})
	if exampleErr != nil {
		tb.Fatal(exampleErr)
	}
	return exampleSet
}

// hostile is one record an attacker or a buggy producer could write, and
// what the engine must make of it: a dead letter with reason, or, when
// reason is empty, an event it evaluates.
type hostile struct {
	name   string
	topic  string
	key    []byte
	value  string
	ts     time.Time
	reason string
}

func payment(fields string) string {
	return `{"event_id":"e1","payment_id":"p1","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"2026-11-20T09:00:00Z"` + fields + `}`
}

// override replaces (or adds) one field of a valid payment.
func override(field, raw string) string {
	base := map[string]string{
		"event_id": `"e1"`, "payment_id": `"p1"`, "account_id": `"a1"`, "status": `"captured"`,
		"amount_cents": `100`, "occurred_at": `"2026-11-20T09:00:00Z"`,
	}
	if raw == "" {
		delete(base, field)
	} else {
		base[field] = raw
	}
	keys := make([]string, 0, len(base))
	for k := range base {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%s", k, base[k])
	}
	b.WriteByte('}')
	return b.String()
}

func hostileRecords() []hostile {
	t0 := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	deep := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)
	entitlement := func(expires string) string {
		return `{"event_id":"s1","subscription_id":"s1","account_id":"a1","subscription_status":"active","entitlement_expires_at":` + expires + `,"occurred_at":"2026-11-20T09:00:00Z"}`
	}
	ledger := func(idem string) string {
		return `{"entry_id":"l1","idempotency_key":` + idem + `,"payment_id":"p1","account_id":"a1","amount_cents":100,"occurred_at":"2026-11-20T09:00:00Z"}`
	}
	return []hostile{
		// Times out of range, in the wrong unit, of the wrong type.
		{name: "time in year 9999 (deadline past it)", topic: "payments", value: override("occurred_at", `"9999-12-31T23:59:59Z"`), reason: ReasonBadTime},
		{name: "time in year 10000", topic: "payments", value: override("occurred_at", `"10000-01-01T00:00:00Z"`), reason: ReasonBadTime},
		{name: "time in year 1", topic: "payments", value: override("occurred_at", `"0001-01-01T00:00:00Z"`), reason: ReasonBadTime},
		{name: "time in 2300, past state's range", topic: "payments", value: override("occurred_at", `"2300-01-01T00:00:00Z"`), reason: ReasonBadTime},
		{name: "time as a number", topic: "payments", value: override("occurred_at", `1763629200`), reason: ReasonBadTime},
		{name: "time missing", topic: "payments", value: override("occurred_at", ``), reason: ReasonBadTime},
		{name: "time null", topic: "payments", value: override("occurred_at", `null`), reason: ReasonBadTime},
		{name: "time not a date", topic: "payments", value: override("occurred_at", `"2026-13-45T99:00:00Z"`), reason: ReasonBadTime},
		{name: "record timestamp in microseconds", topic: "accounts", value: `{"account_id":"a1","tier":"pro","mrr_cents":100}`, ts: time.UnixMilli(t0.UnixMicro()), reason: ReasonBadTime},
		{name: "record timestamp before 1970", topic: "accounts", value: `{"account_id":"a1","tier":"pro","mrr_cents":100}`, ts: time.UnixMilli(-1), reason: ReasonBadTime},
		{name: "until deadline past year 9999", topic: "entitlements", value: entitlement(`"9999-12-31T23:58:00Z"`), reason: ReasonBadField},
		{name: "until deadline past state's range", topic: "entitlements", value: entitlement(`"2199-12-31T23:58:00Z"`), reason: ReasonBadTime},
		{name: "until not a date", topic: "entitlements", value: entitlement(`"soon"`), reason: ReasonBadField},
		// Non-UTF-8 in keys, ids and values.
		{name: "record key not UTF-8", topic: "payments", key: []byte("a\xff1"), value: payment(""), reason: ReasonBadKeyBytes},
		{name: "event id not UTF-8", topic: "payments", value: override("event_id", "\"e\xff1\""), reason: ReasonNotUTF8},
		{name: "join key not UTF-8", topic: "payments", value: override("payment_id", "\"p\xff1\""), reason: ReasonNotUTF8},
		{name: "customer not UTF-8", topic: "payments", value: override("account_id", "\"a\xff1\""), reason: ReasonNotUTF8},
		{name: "transition state not UTF-8", topic: "payments", value: override("status", "\"capt\xffured\""), reason: ReasonNotUTF8},
		{name: "idempotency key not UTF-8", topic: "ledger", value: ledger("\"k\xff\""), reason: ReasonNotUTF8},
		{name: "lone surrogate escape in id", topic: "payments", value: override("event_id", `"e\ud800"`), reason: ""},
		{name: "NUL escape in join key", topic: "payments", value: override("payment_id", `"p\u00001"`), reason: ""},
		// NaN, Inf, huge numbers.
		{name: "amount overflowing to +Inf", topic: "payments", value: override("amount_cents", `1e999`), reason: ReasonBadImpact},
		{name: "amount overflowing to -Inf", topic: "payments", value: override("amount_cents", `-1e999`), reason: ReasonBadImpact},
		{name: "amount the string NaN", topic: "payments", value: override("amount_cents", `"NaN"`), reason: ReasonBadImpact},
		{name: "amount the string Infinity", topic: "payments", value: override("amount_cents", `"Infinity"`), reason: ReasonBadImpact},
		{name: "amount 1e308", topic: "payments", value: override("amount_cents", `1e308`), reason: ""},
		{name: "amount past int64", topic: "payments", value: override("amount_cents", `99999999999999999999999`), reason: ""},
		{name: "amount an object", topic: "payments", value: override("amount_cents", `{}`), reason: ReasonBadImpact},
		{name: "amount missing", topic: "payments", value: override("amount_cents", ``), reason: ReasonBadImpact},
		// Structure: nesting, size, wrong types, duplicates, empties.
		{name: "nesting 10000 deep", topic: "payments", value: deep, reason: ReasonMalformed},
		{name: "value over 256 KiB", topic: "payments", value: payment(`,"pad":"` + strings.Repeat("x", MaxValueBytes) + `"`), reason: ReasonOversized},
		{name: "empty value", topic: "payments", value: ``, reason: ReasonMalformed},
		{name: "null value", topic: "payments", value: `null`, reason: ReasonMalformed},
		{name: "array value", topic: "payments", value: `[1,2]`, reason: ReasonMalformed},
		{name: "trailing garbage", topic: "payments", value: payment("") + ` x`, reason: ReasonMalformed},
		{name: "raw 0xff between tokens", topic: "payments", value: "{\xff" + payment("")[1:], reason: ReasonMalformed},
		{name: "duplicate keys", topic: "payments", value: `{"event_id":"d1","event_id":"d2","payment_id":"pd","account_id":"a1","status":"pending","amount_cents":1,"occurred_at":"2026-11-20T09:00:00Z"}`, reason: ""},
		{name: "event id null", topic: "payments", value: override("event_id", `null`), reason: ReasonBadID},
		{name: "event id an object", topic: "payments", value: override("event_id", `{"x":1}`), reason: ReasonBadID},
		{name: "event id a huge number", topic: "payments", value: override("event_id", `1e400`), reason: ""},
		{name: "event id empty", topic: "payments", value: override("event_id", `""`), reason: ""},
		{name: "status a list", topic: "payments", value: override("status", `["captured"]`), reason: ReasonBadField},
		{name: "idempotency key an object", topic: "ledger", value: ledger(`{"k":1}`), reason: ReasonBadKey},
		{name: "order payment id null", topic: "orders", value: `{"event_id":"o1","order_id":"o1","account_id":"a1","payment_id":null,"status":"fulfilled","occurred_at":"2026-11-20T09:00:00Z"}`, reason: ReasonBadKey},
		{name: "empty object", topic: "payments", value: `{}`, reason: ReasonBadID},
	}
}

// TestHostileRecords sends every hostile record through a partition holding
// every example rule: each is a dead letter with its specific reason or is
// evaluated, nothing panics, and afterwards the partition still judges
// ordinary traffic correctly.
func TestHostileRecords(t *testing.T) {
	rs := exampleRules(t)
	t0 := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	snap := NewMemSnapshot()
	p, err := NewPartition(0, rs, snap, nil, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	cases := hostileRecords()
	if len(cases) < 30 {
		t.Fatalf("only %d hostile records", len(cases))
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := c.ts
			if ts.IsZero() {
				ts = t0
			}
			key := c.key
			if key == nil {
				key = []byte("a1")
			}
			err := p.Apply(&Record{Topic: c.topic, Offset: int64(i), Key: key, Value: []byte(c.value), Timestamp: ts}, t0)
			var de *DecodeError
			switch {
			case c.reason == "" && err != nil:
				t.Fatalf("rejected (%v), want evaluated", err)
			case c.reason != "" && !errors.As(err, &de):
				t.Fatalf("got %v, want a dead letter with reason %s", err, c.reason)
			case c.reason != "" && de.Reason != c.reason:
				t.Fatalf("reason %s (%v), want %s", de.Reason, err, c.reason)
			}
			snap.Apply(p.TakeDelta())
		})
	}
	// The partition keeps going, and its state survives a reload byte-exact:
	// a captured payment without a ledger entry fires, one with an entry
	// (whose join key holds a NUL) does not; p1, captured by the evaluated
	// hostile records, has no entry either.
	p, err = NewPartition(0, rs, snap, nil, nil, t0)
	if err != nil {
		t.Fatalf("reload after hostile records: %v", err)
	}
	before := map[string]bool{}
	for _, v := range p.Violations() {
		before[v.ID] = true
	}
	off := int64(len(cases))
	apply := func(topic, value string) {
		t.Helper()
		off++
		if err := p.Apply(&Record{Topic: topic, Offset: off, Key: []byte("a1"), Value: []byte(value), Timestamp: t0}, t0); err != nil {
			t.Fatalf("ordinary record %s: %v", value, err)
		}
	}
	apply("payments", `{"event_id":"ok1","payment_id":"ok-missing","account_id":"a1","status":"captured","amount_cents":100,"occurred_at":"2026-11-20T09:01:00Z"}`)
	apply("ledger", `{"entry_id":"lnul","idempotency_key":"knul","payment_id":"p\u00001","account_id":"a1","amount_cents":100,"occurred_at":"2026-11-20T09:00:10Z"}`)
	for _, topic := range p.Topics() {
		p.SetCaughtUp(topic, true)
	}
	p.Advance(t0.Add(time.Hour))
	p.Advance(t0.Add(2 * time.Hour))
	got := map[string]violation.State{}
	for _, v := range p.Violations() {
		if !before[v.ID] && v.Rule == "captured_payment_has_ledger_entry" {
			got[v.Key] = v.State
		}
	}
	if want := map[string]violation.State{"ok-missing": violation.Open, "p1": violation.Open}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after hostile records: violations %v, want %v", got, want)
	}
}
