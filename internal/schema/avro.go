package schema

import (
	"fmt"
	"math/big"
	"time"

	"github.com/hamba/avro/v2"

	"github.com/invmon/invmon/internal/rules"
)

// avroDecoder decodes Avro binary values with the writer's schema, so a
// record written under any registered version decodes as written: a field
// added with a default is simply there, a removed one simply absent.
type avroDecoder struct {
	schema avro.Schema
	record *avro.RecordSchema
}

// avroAPI decodes generically (into maps) and is configured once.
var avroAPI = avro.Config{}.Freeze()

func newAvro(text string, refs []reference) (*avroDecoder, error) {
	cache := &avro.SchemaCache{}
	for _, ref := range refs {
		if _, err := avro.ParseWithCache(ref.Text, "", cache); err != nil {
			return nil, fmt.Errorf("avro reference %q: %w", ref.Name, err)
		}
	}
	s, err := avro.ParseWithCache(text, "", cache)
	if err != nil {
		return nil, fmt.Errorf("avro schema: %w", err)
	}
	d := &avroDecoder{schema: s}
	if rec, ok := deref(s).(*avro.RecordSchema); ok {
		d.record = rec
	}
	return d, nil
}

// ParseAvro parses an Avro schema text (for the simulator and tests).
func ParseAvro(text string) (avro.Schema, error) { return avro.Parse(text) }

func (d *avroDecoder) format() string { return rules.FormatAvro }

func (d *avroDecoder) decode(payload []byte, _ []int) (rules.Fields, error) {
	if d.record == nil {
		return nil, fmt.Errorf("the schema is a %s, not a record", d.schema.Type())
	}
	var m map[string]any
	if err := avroAPI.Unmarshal(d.schema, payload, &m); err != nil {
		return nil, err
	}
	return newMapFields(avroRecord(d.record, m)), nil
}

func (d *avroDecoder) eventType(_ []int) (*rules.EventType, error) {
	if d.record == nil {
		return nil, fmt.Errorf("the schema is a %s, not a record", d.schema.Type())
	}
	md, err := avroMessage(d.record)
	if err != nil {
		return nil, err
	}
	return &rules.EventType{Message: md}, nil
}

func deref(s avro.Schema) avro.Schema {
	if r, ok := s.(*avro.RefSchema); ok {
		return r.Schema()
	}
	return s
}

// avroRecord turns a generically decoded record into the values CEL sees:
// a null union member is an absent field, the member of any other union is
// the value itself, a decimal is a double (see docs/rules.md).
func avroRecord(rs *avro.RecordSchema, m map[string]any) map[string]any {
	for _, f := range rs.Fields() {
		v, ok := m[f.Name()]
		if !ok {
			continue
		}
		v = avroValue(f.Type(), v)
		if v == nil {
			delete(m, f.Name())
			continue
		}
		m[f.Name()] = v
	}
	return m
}

func avroValue(s avro.Schema, v any) any {
	s = deref(s)
	if v == nil {
		return nil
	}
	switch s := s.(type) {
	case *avro.UnionSchema:
		// Decoded generically, a non-null union value is {"member": value}.
		if um, ok := v.(map[string]any); ok && len(um) == 1 {
			for name, inner := range um {
				if member, _ := s.Types().Get(name); member != nil {
					return avroValue(member, inner)
				}
			}
		}
		for _, member := range s.Types() {
			if member.Type() != avro.Null {
				return avroValue(member, v)
			}
		}
		return v
	case *avro.RecordSchema:
		if rm, ok := v.(map[string]any); ok {
			return avroRecord(s, rm)
		}
	case *avro.ArraySchema:
		if items, ok := v.([]any); ok {
			for i, it := range items {
				items[i] = avroValue(s.Items(), it)
			}
			return items
		}
	case *avro.MapSchema:
		if mm, ok := v.(map[string]any); ok {
			for k, it := range mm {
				mm[k] = avroValue(s.Values(), it)
			}
			return mm
		}
	}
	switch x := v.(type) {
	case *big.Rat:
		f, _ := x.Float64()
		return f
	case int:
		return int64(x)
	case float32:
		return float64(x)
	case time.Time:
		return x.UTC()
	}
	return v
}
