package rules

import (
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/valyala/fastjson"
)

// Event is one decoded record as rule expressions see it. Its JSON value is
// parsed once; fields are converted to CEL values only when an expression
// reads them, so an event pays only for the fields the rules reference.
//
// An Event is reused across records by its owner (see Decoder) to keep
// allocations off the per-event path; it is not safe for concurrent use.
type Event struct {
	// Topic, Partition, Offset and Key identify the Kafka record.
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	// Timestamp is the record's Kafka timestamp.
	Timestamp time.Time

	// Lookups resolves the names of a rule's lookups; the engine sets it
	// before evaluating that rule's expressions.
	Lookups Resolver

	root   *fastjson.Value
	object jsonObject
}

// Resolver resolves variables beyond event and record: a rule's lookups.
type Resolver interface {
	Resolve(name string, ev *Event) (ref.Val, bool)
}

// NewObject exposes a parsed JSON object to CEL as a map; the engine uses it
// for the latest events of looked-up entities.
func NewObject(v *fastjson.Value) ref.Val { return jsonObject{v: v} }

// EmptyObject is the map a lookup resolves to when its entity is unknown, so
// that `has(account.tier)` and `account.?tier` work as authors expect.
var EmptyObject ref.Val = types.NewStringInterfaceMap(types.DefaultTypeAdapter, map[string]any{})

// Decoder parses record values into Events. It owns a fastjson parser and
// reuses it, so it is not safe for concurrent use: use one per worker.
type Decoder struct {
	parser fastjson.Parser
	event  Event
}

// Decode parses a JSON object record value. The returned Event is valid until
// the next call to Decode.
func (d *Decoder) Decode(topic string, partition int32, offset int64, key, value []byte, ts time.Time) (*Event, error) {
	v, err := d.parser.ParseBytes(value)
	if err != nil {
		return nil, fmt.Errorf("malformed json: %w", err)
	}
	if v.Type() != fastjson.TypeObject {
		return nil, fmt.Errorf("malformed json: value is %s, not an object", v.Type())
	}
	d.event = Event{Topic: topic, Partition: partition, Offset: offset, Key: key, Timestamp: ts, root: v}
	d.event.object = jsonObject{v: v}
	return &d.event, nil
}

// ParseEvent parses a record value into a new Event that stays valid; it is
// for tests and tools, not the per-event path.
func ParseEvent(topic string, value []byte) (*Event, error) {
	var d Decoder
	ev, err := d.Decode(topic, 0, 0, nil, value, time.Time{})
	if err != nil {
		return nil, err
	}
	out := *ev
	return &out, nil
}

// jsonString returns a top-level string (or integral number) field directly,
// without CEL: the fast path for `event.field` id and key expressions.
func (e *Event) jsonString(field string) (string, bool) {
	v := e.root.Get(field)
	if v == nil {
		return "", false
	}
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return string(b), true
	case fastjson.TypeNumber:
		if i, err := v.Int64(); err == nil {
			return strconv.FormatInt(i, 10), true
		}
		return v.String(), true
	default:
		return "", false
	}
}

// jsonTime parses a top-level RFC 3339 string field: the fast path for
// `timestamp(event.field)` time expressions.
func (e *Event) jsonTime(field string) (time.Time, error) {
	v := e.root.Get(field)
	if v == nil {
		return time.Time{}, fmt.Errorf("no field %q", field)
	}
	b, err := v.StringBytes()
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q: %w", field, err)
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q: %w", field, err)
	}
	return t, nil
}

// jsonObject exposes a fastjson object to CEL as a map(string, dyn). Integral
// JSON numbers become CEL ints and others doubles, so `event.amount_cents * 2`
// and `event.amount_cents > 100` both work as an author expects.
type jsonObject struct {
	v *fastjson.Value
}

var (
	_ traits.Mapper = jsonObject{}
	_ traits.Lister = jsonArray{}
)

func jsonToVal(v *fastjson.Value) ref.Val {
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return types.String(b)
	case fastjson.TypeNumber:
		if i, err := v.Int64(); err == nil {
			return types.Int(i)
		}
		f, _ := v.Float64()
		return types.Double(f)
	case fastjson.TypeTrue:
		return types.True
	case fastjson.TypeFalse:
		return types.False
	case fastjson.TypeNull:
		return types.NullValue
	case fastjson.TypeObject:
		return jsonObject{v: v}
	case fastjson.TypeArray:
		return jsonArray{v: v}
	}
	return types.NewErr("unsupported json type %s", v.Type())
}

func (o jsonObject) native() map[string]any {
	m := map[string]any{}
	obj, _ := o.v.Object()
	obj.Visit(func(k []byte, v *fastjson.Value) { m[string(k)] = jsonToVal(v) })
	return m
}

func (o jsonObject) materialize() ref.Val {
	return types.DefaultTypeAdapter.NativeToValue(o.native())
}

func (o jsonObject) ConvertToNative(t reflect.Type) (any, error) {
	return o.materialize().ConvertToNative(t)
}
func (o jsonObject) ConvertToType(t ref.Type) ref.Val { return o.materialize().ConvertToType(t) }
func (o jsonObject) Equal(other ref.Val) ref.Val      { return o.materialize().Equal(other) }
func (o jsonObject) Type() ref.Type                   { return types.MapType }
func (o jsonObject) Value() any                       { return o.native() }
func (o jsonObject) Iterator() traits.Iterator {
	return o.materialize().(traits.Mapper).Iterator()
}

func (o jsonObject) Size() ref.Val {
	obj, _ := o.v.Object()
	return types.Int(obj.Len())
}

func (o jsonObject) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(key), false
	}
	f := o.v.Get(string(k))
	if f == nil {
		return nil, false
	}
	return jsonToVal(f), true
}

func (o jsonObject) Get(key ref.Val) ref.Val {
	v, found := o.Find(key)
	if !found {
		if v != nil {
			return v
		}
		return types.NewErr("no such key: %v", key)
	}
	return v
}

func (o jsonObject) Contains(key ref.Val) ref.Val {
	_, found := o.Find(key)
	return types.Bool(found)
}

// jsonArray exposes a fastjson array to CEL as a list(dyn).
type jsonArray struct {
	v *fastjson.Value
}

func (a jsonArray) items() []*fastjson.Value { items, _ := a.v.Array(); return items }

func (a jsonArray) materialize() ref.Val {
	items := a.items()
	vals := make([]ref.Val, len(items))
	for i, it := range items {
		vals[i] = jsonToVal(it)
	}
	return types.DefaultTypeAdapter.NativeToValue(vals)
}

func (a jsonArray) ConvertToNative(t reflect.Type) (any, error) {
	return a.materialize().ConvertToNative(t)
}
func (a jsonArray) ConvertToType(t ref.Type) ref.Val { return a.materialize().ConvertToType(t) }
func (a jsonArray) Equal(other ref.Val) ref.Val      { return a.materialize().Equal(other) }
func (a jsonArray) Type() ref.Type                   { return types.ListType }
func (a jsonArray) Value() any                       { return a.materialize().Value() }
func (a jsonArray) Iterator() traits.Iterator        { return a.materialize().(traits.Lister).Iterator() }
func (a jsonArray) Size() ref.Val                    { return types.Int(len(a.items())) }
func (a jsonArray) Contains(v ref.Val) ref.Val       { return a.materialize().(traits.Lister).Contains(v) }
func (a jsonArray) Add(o ref.Val) ref.Val            { return a.materialize().(traits.Lister).Add(o) }
func (a jsonArray) Get(i ref.Val) ref.Val {
	idx, ok := i.(types.Int)
	items := a.items()
	if !ok || idx < 0 || int(idx) >= len(items) {
		return types.NewErr("index out of range: %v", i)
	}
	return jsonToVal(items[idx])
}
