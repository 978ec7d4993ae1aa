package schema

import (
	"fmt"
	"strconv"
	"time"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/traits"
	"github.com/valyala/fastjson"

	"github.com/invmon/invmon/internal/rules"
)

// mapFields exposes a decoded record whose values are already what CEL sees
// (strings, int64, float64, bool, []byte, time.Time, nested maps and
// slices) as rules.Fields. CEL converts a value when an expression reads it.
type mapFields struct {
	traits.Mapper
	m map[string]any
}

func newMapFields(m map[string]any) mapFields {
	return mapFields{Mapper: types.DefaultTypeAdapter.NativeToValue(m).(traits.Mapper), m: m}
}

func (f mapFields) StringField(name string) (string, bool) {
	s, ok := f.m[name].(string)
	return s, ok
}

func (f mapFields) TextField(name string) (string, bool) {
	switch v := f.m[name].(type) {
	case string:
		return v, true
	case int64:
		return strconv.FormatInt(v, 10), true
	}
	return "", false
}

func (f mapFields) TimeField(name string) (time.Time, error) {
	switch v := f.m[name].(type) {
	case time.Time:
		return v, nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, fmt.Errorf("field %q: %w", name, err)
		}
		return t, nil
	case nil:
		return time.Time{}, fmt.Errorf("no field %q", name)
	default:
		return time.Time{}, fmt.Errorf("field %q is %T, not a timestamp", name, v)
	}
}

// jsonSchema decodes JSON values framed with a schema id: the framing is
// checked, the JSON read like an unframed JSON stream's.
type jsonSchema struct{}

func (jsonSchema) format() string { return rules.FormatJSONSchema }

func (jsonSchema) decode(payload []byte, _ []int) (rules.Fields, error) {
	var p fastjson.Parser
	v, err := p.ParseBytes(payload)
	if err != nil {
		return nil, fmt.Errorf("malformed json: %w", err)
	}
	if v.Type() != fastjson.TypeObject {
		return nil, fmt.Errorf("malformed json: value is %s, not an object", v.Type())
	}
	return rules.JSONFields(v), nil
}

// eventType is nil: JSON Schema types are not translated for type checks.
func (jsonSchema) eventType(_ []int) (*rules.EventType, error) { return nil, nil }
