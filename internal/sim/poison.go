package sim

import (
	"math/rand/v2"
	"strings"
)

// Poison kinds, as the monitor's dead-letter reasons name them.
var PoisonKinds = []string{"malformed_json", "bad_id", "bad_time", "oversized", "bad_record_key"}

// Poisoned is a record inserted by Poison, and the reason it must be
// rejected with.
type Poisoned struct {
	Topic  string
	Reason string
}

// Poison inserts malformed records among events: about fraction of the
// events, cycling through every kind, each a corrupted copy of a real
// payments or ledger event. It returns the new event list and what it
// inserted; the real events are all still there, in order.
func Poison(events []Event, fraction float64, seed uint64) ([]Event, []Poisoned) {
	rng := rand.New(rand.NewPCG(seed, 0x9015))
	out := make([]Event, 0, len(events)+int(float64(len(events))*fraction)+1)
	var inserted []Poisoned
	for _, e := range events {
		out = append(out, e)
		base := strings.TrimPrefix(e.Topic, e.Topic[:strings.LastIndex(e.Topic, "-")+1])
		if (base != TopicPayments && base != TopicLedger) || rng.Float64() >= fraction {
			continue
		}
		kind := PoisonKinds[len(inserted)%len(PoisonKinds)]
		bad := Event{Topic: e.Topic, Key: e.Key, Time: e.Time}
		v := string(e.Value)
		switch kind {
		case "malformed_json":
			bad.Value = []byte(v[:len(v)/2])
		case "bad_id":
			// Drop the identity field: event_id or entry_id.
			v = strings.Replace(v, `"event_id":`, `"event_idx":`, 1)
			bad.Value = []byte(strings.Replace(v, `"entry_id":`, `"entry_idx":`, 1))
		case "bad_time":
			bad.Value = []byte(strings.Replace(v, `"occurred_at":"`, `"occurred_at":"yesterday `, 1))
		case "oversized":
			bad.Value = []byte(strings.Replace(v, `{`, `{"padding":"`+strings.Repeat("x", 300<<10)+`",`, 1))
		case "bad_record_key":
			bad.Key = "\xff\xfe" + e.Key
			bad.Value = e.Value
		}
		out = append(out, bad)
		inserted = append(inserted, Poisoned{Topic: e.Topic, Reason: kind})
	}
	return out, inserted
}
